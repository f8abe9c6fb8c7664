"""A running pipeline inside the test's event loop: real database, real bus, the real HTTP app.

    async with running_pipeline(database_url, bus_kind, broker, services={"ingest", "scoring", "router"}) as p:
        r = await p.client.post("/v1/touchpoints", json=..., headers=p.auth())
        await p.wait_for(lambda: ...)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from services.config import HandoffConfig, load_config
from services.http.app import create_app
from services.runtime import Container, background_tasks, bootstrap
from services.settings import Settings
from tests.support.infra import Broker

WEBSITE_KEY = "test-website-key"
SEGMENT_KEY = "test-segment-key"
API_TOKEN = "test-token"
TEST_SECRETS = {
    "WEBSITE_WEBHOOK_SECRET": WEBSITE_KEY,
    "SEGMENT_WRITE_KEY": SEGMENT_KEY,
    "HUBSPOT_CLIENT_SECRET": "test-hubspot-secret",
    "MAUTIC_WEBHOOK_SECRET": "test-mautic-secret",
    "CRM_SIGNING_SECRET": "test-crm-secret",
    "PD_ROUTING_KEY": "test-pd-key",
}


@dataclass
class Pipeline:
    container: Container
    client: httpx.AsyncClient
    stop: asyncio.Event

    @staticmethod
    def auth(key: str = WEBSITE_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    @staticmethod
    def api() -> dict[str, str]:
        return {"Authorization": f"Bearer {API_TOKEN}"}

    async def wait_for(self, condition: Callable[[], Awaitable[Any]], timeout: float = 30.0,
                       what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = await condition()
            if result:
                return result
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def pipeline_settings(database_url: str, bus_kind: str, broker: Broker | None, **extra: Any) -> Settings:
    kafka = broker.bootstrap if bus_kind == "kafka" and broker is not None else ""
    return Settings(database_url=database_url, kafka_bootstrap=kafka, topic_prefix=f"p{uuid.uuid4().hex[:8]}.",
                    kafka_partitions=4, api_token=SecretStr(API_TOKEN), **extra)


@asynccontextmanager
async def running_pipeline(
    database_url: str,
    bus_kind: str,
    broker: Broker | None,
    *,
    services: set[str],
    config: HandoffConfig | None = None,
    monkeypatch: Any = None,
) -> AsyncIterator[Pipeline]:
    if monkeypatch is not None:
        for name, value in TEST_SECRETS.items():
            monkeypatch.setenv(name, value)
    settings = pipeline_settings(database_url, bus_kind, broker)
    container = await bootstrap(settings, services, config=config or load_config(None))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(t(stop)) for t in background_tasks(container)]
    app = create_app(container)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
            yield Pipeline(container, c, stop)
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await container.close()
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"background tasks failed: {errors!r}"
