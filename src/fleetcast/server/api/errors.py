"""Turn every error into the one JSON shape: ``{"error": {"code", "message", "details"}}``.

Domain errors carry their status and code; core ``InvalidDataError`` (a wire
object that does not validate) is a 422 ``validation_error``; request
validation lists the bad fields in ``details``; framework HTTP errors (404
route, 405) keep their status with a code derived from it; a 503 ``busy``
with ``Retry-After`` when no database connection came free in time (an
overload) or the database dropped the connection; anything else is a 500
``internal_error`` that reveals nothing but is logged.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleetcast.exceptions import InvalidDataError
from fleetcast.server.errors import ServerError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "validation_error",
    429: "too_many_requests",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The one error shape."""
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers)


async def _server_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServerError)
    return error_response(
        exc.status_code, exc.code, str(exc), exc.details, headers=exc.headers or None
    )


async def _invalid_data(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(422, "validation_error", str(exc))


async def _request_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [
        {
            "field": ".".join(str(part) for part in error.get("loc", ())),
            "message": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return error_response(
        422, "validation_error", f"invalid request: {summary}", {"fields": fields}
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    try:
        default = HTTPStatus(status).phrase
    except ValueError:
        default = "error"
    code = _HTTP_CODES.get(status, "http_error" if status < 500 else "internal_error")
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else default
    return error_response(status, code, message, headers=dict(exc.headers or {}))


async def _busy(request: Request, exc: Exception) -> JSONResponse:
    # Every pooled database connection stayed busy for database_pool_timeout:
    # an overload, not a fault; the client should come back later.
    log.warning("no free database connection for %s %s", request.method, request.url.path)
    return error_response(
        503, "busy", "the server is overloaded; retry later", headers={"Retry-After": "5"}
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if exc.connection_invalidated:
        # The database dropped a pooled connection (restart, failover); the pool
        # has replaced it, so the same request succeeds when tried again.
        log.warning("database connection lost during %s %s", request.method, request.url.path)
        return error_response(
            503, "busy", "the database connection was lost; retry", headers={"Retry-After": "1"}
        )
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; every error response of ``app`` gets the one shape."""
    app.add_exception_handler(ServerError, _server_error)
    app.add_exception_handler(InvalidDataError, _invalid_data)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(PoolTimeout, _busy)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
