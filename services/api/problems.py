"""RFC 9457 problem responses: every API error is JSON with a code and a sentence."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

PROBLEM_TYPE = "application/problem+json"


def problem(
    status: int, code: str, title: str, detail: str, *, field: str | None = None,
    headers: dict[str, str] | None = None, **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {
        "type": f"https://phoenixq.dev/problems/{code}",
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


class Problem(Exception):
    """Raise from a view to answer with a problem response."""

    def __init__(self, status: int, code: str, title: str, detail: str,
                 field: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.title, self.detail = status, code, title, detail
        self.field, self.headers = field, headers

    def response(self) -> web.Response:
        return problem(self.status, self.code, self.title, self.detail, field=self.field,
                       headers=self.headers)
