"""GET /docs: the OpenAPI document rendered as one self-contained HTML page (no CDN)."""

from __future__ import annotations

from html import escape
from typing import Any

import orjson

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#222}
h1{margin-bottom:0}.op{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}
.m{display:inline-block;min-width:4.5rem;font-weight:bold;font-family:monospace}
.get{color:#0a6}.post{color:#06c}.delete{color:#c30}code,pre{font-family:monospace}
pre{background:#f6f6f6;padding:.5rem;overflow:auto;font-size:13px}
details summary{cursor:pointer}table{border-collapse:collapse}
td{padding:.1rem .6rem;vertical-align:top;border-bottom:1px solid #eee}
"""


def render_docs(doc: dict[str, Any]) -> str:
    """The whole page: title, description, one block per operation, the schemas."""
    info = doc["info"]
    ops = "".join(
        _operation(path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
    )
    schemas = escape(orjson.dumps(doc["components"]["schemas"],
                                  option=orjson.OPT_INDENT_2).decode())
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(info['title'])}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(info['title'])}</h1><p>{escape(info['description'])}</p>"
        f"<p>Machine-readable: <a href=/openapi.json>/openapi.json</a> "
        f"(OpenAPI {escape(doc['openapi'])}).</p>{ops}"
        f"<h2>Schemas</h2><details><summary>components.schemas</summary>"
        f"<pre>{schemas}</pre></details></body></html>"
    )


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    params = "".join(
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
        f"<td>{escape(p.get('description', ''))}</td></tr>"
        for p in op.get("parameters", [])
    )
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    body_ref = body.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
    codes = ", ".join(escape(code) for code in op["responses"])
    return (
        f"<div class=op><div><span class='m {method}'>{method.upper()}</span>"
        f"<code>{escape(path)}</code> — {escape(op['summary'])}</div>"
        + (f"<p>{escape(op['description'])}</p>" if "description" in op else "")
        + (f"<table>{params}</table>" if params else "")
        + (f"<p>Body: <code>{escape(body_ref)}</code></p>" if body_ref else "")
        + f"<p>Responses: {codes}</p></div>"
    )
