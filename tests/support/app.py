"""Build a container and an in-process HTTP client for API tests (real database, real bus).

    async with api_client(database_url, services={"api"}, token="t0k") as (client, container):
        r = await client.get("/v1/leads", headers={"Authorization": "Bearer t0k"})
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from pydantic import SecretStr

from services.config import HandoffConfig, load_config
from services.http.app import create_app
from services.runtime import Container, bootstrap
from services.settings import Settings


def test_settings(database_url: str, token: str | None = "test-token", **overrides: object) -> Settings:
    return Settings(database_url=database_url, api_token=SecretStr(token) if token else None,
                    **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def api_client(
    database_url: str,
    *,
    services: set[str] | None = None,
    config: HandoffConfig | None = None,
    token: str | None = "test-token",
    demo: bool = False,
) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    settings = test_settings(database_url, token)
    container = await bootstrap(settings, services or {"api"}, config=config or load_config(None), demo=demo)
    app = create_app(container)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, container
    finally:
        await container.close()
