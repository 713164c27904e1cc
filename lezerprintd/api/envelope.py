"""One shape for every answer under /api/, and the middlewares that keep it so.

Success: `{"success": true, "data": ..., "meta": ...}`. Failure: `{"success": false, "error":
{"code", "message", "details"}}`.

Rule: no stack trace, exception text of a bug, or internal path ever reaches a client. A
`UserError` becomes its 4xx answer; a printer that cannot do it, 409 PRINTER_ERROR; aiohttp's
own refusals (404, 405, 413) keep their status in the envelope; anything else is a bug:
logged with its traceback, answered 500 INTERNAL_ERROR.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from lezerprintd.errors import PrinterError, UserError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def camel(key: str) -> str:
    """A Python name as the API's JSON names it: "max_bed_temp" -> "maxBedTemp"."""
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)


# aiohttp's own refusals, in the envelope's words.
_HTTP_CODES: Final = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}

# Every answer, API or page. The UI has no inline script, so the policy can forbid it.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def ok(data: object = None, meta: dict[str, Any] | None = None, status: int = 200) -> web.Response:
    body: dict[str, object] = {"success": True, "data": data}
    if meta is not None:
        body["meta"] = meta
    return web.json_response(body, status=status)


def failure(
    status: int,
    code: str,
    message: str,
    details: object = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, object] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return web.json_response(
        {"success": False, "error": error}, status=status, headers=headers or None
    )


def page_meta(page: int, limit: int, total: int) -> dict[str, int | bool]:
    """The one pagination shape of every list."""
    pages = max(1, math.ceil(total / limit))
    return {
        "page": page,
        "limit": limit,
        "total": total,
        "pages": pages,
        "hasNext": page < pages,
        "hasPrev": page > 1,
    }


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except UserError as error:
        return failure(error.status, error.code, str(error), error.details, error.headers)
    except PrinterError as error:
        return failure(error.status, error.code, str(error))
    except web.HTTPException as error:
        if error.status < 400 or not request.path.startswith("/api/"):
            raise
        code = _HTTP_CODES.get(error.status, "VALIDATION_ERROR")
        headers = {k: v for k, v in error.headers.items() if k in ("Allow", "Retry-After")}
        return failure(error.status, code, error.reason, headers=headers)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return failure(500, "INTERNAL_ERROR", "internal error; the daemon's log has details")


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every answer, aiohttp's own and streamed ones included."""
    response.headers.update(SECURITY_HEADERS)
