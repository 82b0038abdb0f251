"""RFC 9457 problem responses: every API error is JSON with a code and a sentence."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

PROBLEM_TYPE = "application/problem+json"
PROBLEM_BASE = "https://phoenixq.dev/problems/"

#: Codes for the HTTP errors aiohttp raises itself (routing, body size).
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def problem(
    status: int, code: str, title: str, detail: str, *, field: str | None = None,
    headers: dict[str, str] | None = None, **extra: Any,
) -> web.Response:
    """A problem+json response: ``type``, ``code``, ``title``, ``status``, ``detail``."""
    body: dict[str, Any] = {
        "type": f"{PROBLEM_BASE}{code}",
        "code": code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    body.update(extra)
    return web.Response(
        status=status, body=orjson.dumps(body), content_type=PROBLEM_TYPE, headers=headers
    )


def from_http_exception(exc: web.HTTPException) -> web.Response:
    """An aiohttp HTTP error (404 no route, 405, 413 body too large, ...) as a problem."""
    code = HTTP_CODES.get(exc.status, exc.reason.lower().replace(" ", "_"))
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    return problem(exc.status, code, exc.reason, detail, headers=headers)


class Problem(Exception):
    """Raise from a view to answer with a problem response; ``extra`` adds members."""

    def __init__(self, status: int, code: str, title: str, detail: str,
                 field: str | None = None, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.title, self.detail = status, code, title, detail
        self.field, self.headers, self.extra = field, headers, extra

    def response(self) -> web.Response:
        return problem(self.status, self.code, self.title, self.detail, field=self.field,
                       headers=self.headers, **self.extra)


def json_response(data: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response serialised with orjson."""
    return web.Response(body=orjson.dumps(data), status=status,
                        content_type="application/json", headers=headers)
