"""The ``router`` service: the consumer of lead events plus a sweeper for the fallback queue."""

from __future__ import annotations

import asyncio
import logging

from services.consumer import ConsumerRunner
from services.runtime import Container, ServicePart

log = logging.getLogger(__name__)


def build(container: Container) -> ServicePart:
    from router.consumer import RouterHandler

    handler = RouterHandler(container.db, container.config)
    runner = ConsumerRunner(container.db, container.bus, handler)
    container.extras.setdefault("runners", []).append(runner)

    async def sweep(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 10.0)
            except TimeoutError:
                pass
            if stop.is_set():
                return
            try:
                await handler.sweep_fallback_queue()
            except Exception as exc:  # a database hiccup: try again next round
                log.warning("router: fallback sweep failed: %s", exc)

    return ServicePart(name="router", tasks=[runner.run, sweep])
