"""The whole HTTP app in this process (every service, embedded bus, SQLite), and how its routes are
classified for the security tests.

    async with whole_app(tmp_path) as (client, app):
        routes(app)            # [(method, path template), ...] from the app itself, not a hand-kept list

Every route the app serves must fall in exactly one class below; a new route that does not fails
``test_every_route_is_classified`` until someone decides who may call it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from services.config import HandoffConfig, load_config
from services.db.migrate import migrate
from services.http.app import create_app
from services.runtime import background_tasks, bootstrap
from tests.support.app import test_settings
from tests.support.pipeline import API_TOKEN, TEST_SECRETS

# The lead, report, rep and dashboard API: a valid HANDOFF_API_TOKEN bearer token or nothing.
TOKEN_PREFIXES = ("/v1/leads", "/v1/reports", "/v1/reps", "/dashboard")
# Ingest: a source's write key (Bearer / Basic) or its signature.
SOURCE_AUTH = frozenset({"/v1/touchpoints", "/v1/touchpoints/batch", "/v1/track", "/v1/identify", "/v1/page",
                         "/v1/alias", "/v1/batch", "/webhooks/{source_id}"})
# The CRM's callback: signed like the generic source, with the CRM signing secret.
CRM_SIGNED = frozenset({"/webhooks/crm/{crm}"})
# Only in demo mode (``handoff up`` without --no-demo): the built-in sinks of the example config.
DEMO = frozenset({"/demo/inbox", "/demo/inbox.json", "/demo/inbox/{channel}"})
# Open on purpose: health, readiness, metrics, the API description.
PUBLIC = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect",
                    "/redoc", "/static/{name}"})  # static: the dashboard's CSS and JS, no data
SAMPLE_PARAMS = {"lead_id": "0" * 32, "rep_id": "anna", "source_id": "website", "crm": "webhook", "channel": "crm",
                 "name": "dashboard.css"}


def is_token_protected(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") or path.startswith(p + "?") for p in TOKEN_PREFIXES)


def classify(path: str) -> str | None:
    if is_token_protected(path):
        return "token"
    for name, paths in (("source", SOURCE_AUTH), ("crm_signed", CRM_SIGNED), ("demo", DEMO), ("public", PUBLIC)):
        if path in paths:
            return name
    return None


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) for every endpoint the app serves, however its routers were included."""
    return sorted(set(_walk(app.routes, "")))


def _walk(entries: Any, prefix: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for route in entries:
        if isinstance(route, APIRoute | Route):
            out += [(m, prefix + route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
        elif hasattr(route, "original_router"):  # FastAPI >= 0.16x wraps included routers
            context = getattr(route, "include_context", None)
            out += _walk(route.original_router.routes, prefix + (getattr(context, "prefix", "") or ""))
        elif isinstance(route, Mount):
            out.append(("GET", prefix + route.path + "/{path}"))
        else:  # an unknown kind of route: report it so that it gets classified
            out.append(("?", prefix + str(getattr(route, "path", route))))
    return out


def concrete(path: str) -> str:
    """A path template with sample values for its parameters."""
    for name, value in SAMPLE_PARAMS.items():
        path = path.replace("{" + name + "}", value)
    return path


def set_test_secrets() -> None:
    for name, value in TEST_SECRETS.items():
        os.environ.setdefault(name, value)


@asynccontextmanager
async def whole_app(tmp_path: Path, *, token: str | None = API_TOKEN, demo: bool = True,
                    config: HandoffConfig | None = None, run_tasks: bool = False,
                    database_url: str | None = None) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """Every service's routes over a fresh SQLite database (or ``database_url``, migrated already);
    ``run_tasks`` also runs the ingest writer, the consumers and the workers (a 2xx from ingest needs
    them). App exceptions come back as 500 answers, as a real server would send them."""
    set_test_secrets()
    url = database_url
    if url is None:
        url = f"sqlite+aiosqlite:///{_ensure_dir(tmp_path) / 'security.db'}"
        await migrate(url)
    settings = test_settings(url, token)
    container = await bootstrap(settings, {"ingest", "scoring", "router", "notifier", "api"},
                                config=config or load_config(None), demo=demo,
                                demo_token=None)
    app = create_app(container)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(t(stop)) for t in background_tasks(container)] if run_tasks else []
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://testserver",
                                     timeout=30) as client:
            yield client, app
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await container.close()


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def error_code(response: httpx.Response) -> Any:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
