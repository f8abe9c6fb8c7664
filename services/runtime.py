"""One bootstrap per process: settings in, a container of started components out, services run on it.

    container = await bootstrap(Settings(), services={"ingest", "scoring"})
    try:
        await run(container, stop)          # HTTP app + consumers + workers until ``stop`` is set
    finally:
        await container.close()

Service packages (``ingest``, ``scoring``, ``router``, ``notifier``) each expose ``build(container) ->
ServicePart`` and never import each other; this module is the one place that composes them.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.bus.base import Bus
from services.bus.kafka import KafkaBus
from services.bus.local import LocalBus
from services.config import HandoffConfig, load_config
from services.db.database import Database
from services.db.upkeep import TableUpkeep
from services.outbox import OutboxRelay
from services.settings import Settings

if TYPE_CHECKING:
    from fastapi import APIRouter

log = logging.getLogger(__name__)

SERVICES = ("ingest", "scoring", "router", "notifier", "api")
Task = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class ServicePart:
    """What one service adds to a process: HTTP routes, background tasks, and clean-up."""

    name: str
    routers: list[APIRouter] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    ready_checks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


@dataclass
class Container:
    settings: Settings
    config: HandoffConfig
    db: Database
    bus: Bus
    relay: OutboxRelay
    demo: bool = False
    demo_token: str | None = None
    parts: dict[str, ServicePart] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def api_tokens(self) -> list[str]:
        tokens = self.settings.api_tokens()
        if not tokens and self.demo_token:
            tokens = [self.demo_token]
        return tokens

    async def close(self) -> None:
        for part in self.parts.values():
            for closer in part.on_close:
                try:
                    await closer()
                except Exception:
                    log.exception("%s: error while closing", part.name)
        await self.bus.stop()
        await self.db.dispose()


def make_bus(settings: Settings, db: Database) -> Bus:
    if settings.kafka_enabled:
        return KafkaBus(settings.kafka_bootstrap, prefix=settings.topic_prefix,
                        partitions=settings.kafka_partitions, replication=settings.kafka_replication)
    return LocalBus(db, prefix=settings.topic_prefix, partitions=settings.embedded_partitions)


async def bootstrap(
    settings: Settings,
    services: set[str] | frozenset[str],
    *,
    config: HandoffConfig | None = None,
    demo: bool = False,
    demo_token: str | None = None,
) -> Container:
    """Create and start the components ``services`` need; nothing is created at import time."""
    config = config if config is not None else load_config(settings.config_path())
    db = Database(settings.database_url)
    bus = make_bus(settings, db)
    await _start_with_retry(bus, "bus")
    relay = OutboxRelay(db, bus)
    container = Container(settings=settings, config=config, db=db, bus=bus, relay=relay, demo=demo,
                          demo_token=demo_token)
    for name in sorted(services):
        module = importlib.import_module(f"{name}.service" if name != "api" else "services.api.service")
        container.parts[name] = module.build(container)
    return container


async def _start_with_retry(bus: Bus, what: str, attempts: int = 30) -> None:
    delay = 0.2
    for attempt in range(attempts):
        try:
            await bus.start()
            return
        except Exception as exc:  # the broker may still be starting (compose, k8s)
            if attempt == attempts - 1:
                raise RuntimeError(f"cannot start the {what}: {exc}") from exc
            log.warning("cannot start the %s yet (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def background_tasks(container: Container) -> list[Task]:
    upkeep = TableUpkeep(container.db, interval=container.settings.db_upkeep_seconds)  # only if autovacuum is off
    tasks: list[Task] = [container.relay.run, upkeep.run]
    for part in container.parts.values():
        tasks += part.tasks
    return tasks
