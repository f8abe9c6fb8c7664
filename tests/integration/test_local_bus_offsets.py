"""The embedded bus hands out offsets without gaps or repeats, per partition, on both databases."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from sqlalchemy import select

from services.bus.base import partition_for
from services.bus.local import LocalBus
from services.db.database import Database
from services.db.models import bus_log, bus_partitions
from services.events import Event


def _events(tag: str, n: int, keys: int) -> list[Event]:
    return [Event.new("test.event", source="tests", key=f"k{i % keys}", id=f"{tag}-{i}", data={"i": i})
            for i in range(n)]


async def test_concurrent_publishes_get_contiguous_offsets_in_every_partition(db: Database) -> None:
    bus = LocalBus(db, prefix="offsets.", partitions=4)
    await bus.start()
    # Eight publishers at once, each touching every partition (and one a single partition).
    batches = [_events(f"b{n}", 25, keys=9) for n in range(8)] + [_events("one", 5, keys=1)]
    await asyncio.gather(*(bus.publish("touchpoints", batch) for batch in batches))
    async with db.read() as conn:
        rows = (await conn.execute(select(bus_log.c.partition, bus_log.c.offset, bus_log.c.key)
                                   .where(bus_log.c.topic == "offsets.touchpoints"))).all()
        ends = dict((await conn.execute(select(bus_partitions.c.partition, bus_partitions.c.next_offset)
                                        .where(bus_partitions.c.topic == "offsets.touchpoints"))).all())
    offsets: dict[int, list[int]] = defaultdict(list)
    for partition, offset, key in rows:
        assert partition == partition_for(key, 4)
        offsets[partition].append(offset)
    assert len(rows) == 8 * 25 + 5
    for partition, seen in offsets.items():
        assert sorted(seen) == list(range(len(seen))), f"partition {partition}: gaps or repeats"
        assert ends[partition] == len(seen)


async def test_a_topic_created_after_start_gets_its_partitions_on_first_publish(db: Database) -> None:
    bus = LocalBus(db, prefix="late.", partitions=4)  # not started: no partition rows yet
    await bus.publish("custom-topic", _events("x", 12, keys=5))
    await bus.publish("custom-topic", _events("y", 12, keys=5))
    async with db.read() as conn:
        rows = (await conn.execute(select(bus_log.c.partition, bus_log.c.offset)
                                   .where(bus_log.c.topic == "late.custom-topic"))).all()
    offsets: dict[int, list[int]] = defaultdict(list)
    for partition, offset in rows:
        offsets[partition].append(offset)
    assert sum(len(v) for v in offsets.values()) == 24
    for seen in offsets.values():
        assert sorted(seen) == list(range(len(seen)))
