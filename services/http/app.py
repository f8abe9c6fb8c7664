"""The HTTP app of a process: the routes of its services plus ``/healthz``, ``/readyz`` and ``/metrics``.

    app = create_app(container)          # container.parts decide which routes are there
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.http.errors import ORJSONResponse, error_response, install_error_handlers
from services.runtime import Container


def create_app(container: Container) -> FastAPI:
    app = FastAPI(
        title="Lead handoff service",
        version="0.1.0",
        description="Touchpoint ingest, lead scoring, MQL->SQL routing, CRM push and response-time SLAs.",
        default_response_class=ORJSONResponse,
    )
    app.state.container = container
    install_error_handlers(app)

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
    return app
