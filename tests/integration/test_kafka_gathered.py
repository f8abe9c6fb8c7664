"""A gathered publish is sent at once: the producer's linger is for messages that may still come."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.bus.kafka import KafkaBus
from services.events import Event
from tests.integration.test_bus_contract import drain
from tests.support.infra import Broker

pytestmark = pytest.mark.integration

LINGER_MS = 60_000  # far beyond the wait below: a publish that lingers cannot finish in time


async def test_a_gathered_publish_does_not_wait_for_the_linger(broker: Broker) -> None:
    bus = KafkaBus(broker.bootstrap, prefix=f"t{uuid.uuid4().hex[:8]}.", partitions=4, linger_ms=LINGER_MS)
    await bus.start()
    consumer = bus.consumer("g-gathered", ["touchpoints"])
    try:
        events = [Event.new("test.event", source="tests", key=f"k{i}", id=f"g-{i}", data={"seq": i})
                  for i in range(40)]
        await asyncio.wait_for(bus.publish("touchpoints", events, gathered=True), 20)
        await consumer.start()
        got = await drain(consumer, 40)
        assert sorted(m.event().id for m in got) == sorted(e.id for e in events)
    finally:
        await consumer.stop()
        await bus.stop()
