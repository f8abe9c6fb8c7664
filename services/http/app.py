"""The HTTP app of a process: the routes of its services plus ``/healthz``, ``/readyz`` and ``/metrics``.

    app = create_app(container)          # container.parts decide which routes are there
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.http.direct import DirectDispatchApp
from services.http.errors import ORJSONResponse, error_response, install_error_handlers
from services.http.links import add_cross_service_links
from services.runtime import Container

MAX_BODY_BYTES = 1024 * 1024  # contract: a body over 1 MiB is refused with 413, on every endpoint


def create_app(container: Container) -> FastAPI:
    app = DirectDispatchApp(
        title="Lead handoff service",
        version="0.1.0",
        description="Touchpoint ingest, lead scoring, MQL->SQL routing, CRM push and response-time SLAs.",
        default_response_class=ORJSONResponse,
    )
    app.state.container = container
    install_error_handlers(app)
    app.add_middleware(RequestLimits, limit=MAX_BODY_BYTES)

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: database and bus reachable",
             responses={503: {"description": "a dependency is down"}})
    async def readyz() -> Response:
        checks = {"database": container.db.ping(), "bus": container.bus.ping()}
        failures = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check, 3.0)
            except Exception as exc:
                failures[name] = f"{type(exc).__name__}: {exc}"[:300]
        for part in container.parts.values():
            for extra in part.ready_checks:
                try:
                    await asyncio.wait_for(extra(), 3.0)
                except Exception as exc:
                    failures[part.name] = f"{type(exc).__name__}: {exc}"[:300]
        if failures:
            return error_response(503, "not_ready", "a dependency is unreachable", failures,
                                  {"Retry-After": "5"})
        return ORJSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        for hook in container.extras.get("metrics_hooks", []):
            await hook()
        for runner in container.extras.get("runners", []):
            try:
                await asyncio.wait_for(runner.report_lag(), 2.0)
            except Exception:  # lag is best effort: a scrape must not fail because the bus is slow
                pass
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for part in container.parts.values():
        for router in part.routers:
            app.include_router(router)
            app.add_direct_routes(router)
    _link_services_in_schema(app)
    return app


def _link_services_in_schema(app: FastAPI) -> None:
    """Make ``app.openapi()`` (built once, then cached by FastAPI) carry the links between services
    this process serves both ends of (:func:`services.http.links.add_cross_service_links`)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_cross_service_links(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class RequestLimits:
    """ASGI middleware, the first thing every request meets; it refuses, before any endpoint runs:

    - a body over ``limit`` bytes: 413 (FastAPI would otherwise buffer a body of any size for the
      endpoints that declare a model). The body is read in chunks up to ``limit`` + 1 and handed to
      the app unchanged;
    - a NUL character in the path, the query string or a JSON string of the body (``\\u0000``): 400.
      PostgreSQL cannot store or even compare text holding NUL, so such a value would end as a 500.
    """

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b"") \
                or b"\x00" in scope.get("query_string", b""):
            await self._refuse(scope, receive, send, 400, "bad_request",
                               "the path or query string contains a NUL character (%00); remove it")
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._too_large(scope, receive, send, f"the body is {int(declared)} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(scope, receive, send, "the body is larger")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if b"\\u0000" in body and _JSON_NUL.search(body):
            await self._refuse(scope, receive, send, 400, "bad_body",
                               "a string in the body contains a NUL character (\\u0000), which cannot be stored; "
                               "remove it")
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Any, receive: Any, send: Any, what: str) -> None:
        await self._refuse(scope, receive, send, 413, "payload_too_large",
                           f"{what}; the limit is {self.limit} bytes (after decompression for ingest); "
                           "send less per request (e.g. split a batch)")

    @staticmethod
    async def _refuse(scope: Any, receive: Any, send: Any, status: int, code: str, message: str) -> None:
        await error_response(status, code, message)(scope, receive, send)


# A JSON \u0000 escape: a backslash-u0000 not itself escaped (preceded by an even number of backslashes).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
