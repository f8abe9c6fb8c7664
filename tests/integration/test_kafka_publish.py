"""The Kafka bus hands its record batches over closed: none waits out the producer's linger."""

from __future__ import annotations

import asyncio
import uuid

from services.bus.kafka import KafkaBus
from tests.integration.test_bus_contract import drain, make_events
from tests.support.infra import Broker

LINGER_MS = 60_000  # an open batch would wait this long for more messages before it is sent


async def test_a_publish_does_not_wait_for_the_linger(broker: Broker) -> None:
    bus = KafkaBus(broker.bootstrap, prefix=f"t{uuid.uuid4().hex[:8]}.", partitions=4, linger_ms=LINGER_MS)
    await bus.start()
    try:
        events = make_events(100, keys=10, tag="linger")
        # acks=all for all four partitions' batches; an open batch would hold this for a minute.
        await asyncio.wait_for(bus.publish("touchpoints", events), timeout=LINGER_MS / 1000 / 4)
        consumer = bus.consumer("g-linger", ["touchpoints"])
        await consumer.start()
        try:
            got = await drain(consumer, 100)
        finally:
            await consumer.stop()
        assert sorted(m.event().id for m in got) == sorted(e.id for e in events)
    finally:
        await bus.stop()
