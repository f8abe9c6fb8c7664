"""The contract's error body, ``{"error": {"code", "message", "details"}}``, for every refusal.

    raise ApiError(404, "lead_not_found", "no lead with id 'x'; look it up with GET /v1/leads?email=")
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from services.bus.base import BusError
from services.transient import is_transient

log = logging.getLogger(__name__)


class ORJSONResponse(JSONResponse):
    """JSON rendered by orjson (fast, and datetimes as ISO 8601)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class ApiError(Exception):
    """An error a client can act on; ``headers`` e.g. ``Retry-After`` or ``WWW-Authenticate``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> ORJSONResponse:
    return ORJSONResponse({"error": {"code": code, "message": message, "details": details}},
                          status_code=status, headers=headers)


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "invalid_payload", 429: "rate_limited",
                 503: "unavailable"}


def validation_details(exc: RequestValidationError) -> list[dict[str, str]]:
    details = []
    for item in exc.errors():
        loc = [str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path", "header")]
        details.append({"field": ".".join(loc) or "body", "message": str(item.get("msg", "invalid"))})
    return details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> ORJSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> ORJSONResponse:
        details = validation_details(exc)
        fields = ", ".join(d["field"] for d in details)
        return error_response(422, "invalid_payload", f"invalid fields: {fields}", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> ORJSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), None, getattr(exc, "headers", None))

    async def _dependency(_request: Request, exc: Exception) -> ORJSONResponse:
        if is_transient(exc):  # e.g. a database connection cut under the request: the next try works
            log.warning("a dependency failed under a request: %s: %s", type(exc).__name__, exc)
            return error_response(503, "unavailable", f"a dependency failed ({type(exc).__name__}); retry",
                                  headers={"Retry-After": "1"})
        return internal_error(exc)

    for kind in (SQLAlchemyError, OSError, BusError):
        app.add_exception_handler(kind, _dependency)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> ORJSONResponse:
        return internal_error(exc)


def internal_error(exc: Exception) -> ORJSONResponse:
    """Log an error no handler expected (with its traceback) and answer 500 without its details."""
    log.exception("unhandled error: %s", type(exc).__name__)
    return error_response(500, "internal_error", "the service failed to handle the request; it is logged")
