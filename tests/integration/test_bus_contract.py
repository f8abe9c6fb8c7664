"""The contract every Bus implementation keeps: run on both buses and both databases."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from services.bus.base import Bus, Consumer, Message
from services.events import Event

TOPIC = "touchpoints"


def make_events(n: int, keys: int, tag: str = "e") -> list[Event]:
    return [Event.new("test.event", source="tests", key=f"k{i % keys}", id=f"{tag}-{i}", data={"seq": i})
            for i in range(n)]


async def drain(consumer: Consumer, want: int, timeout: float = 30.0, commit: bool = True) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        batch = await consumer.poll(0.5, 100)
        got += batch
        if commit and batch:
            await consumer.commit(batch)
    return got


async def test_order_per_key_is_kept(bus: Bus) -> None:
    events = make_events(300, keys=7)
    await bus.publish(TOPIC, events[:150])
    await bus.publish(TOPIC, events[150:])
    consumer = bus.consumer("g-order", [TOPIC])
    await consumer.start()
    try:
        got = await drain(consumer, 300)
    finally:
        await consumer.stop()
    seqs: dict[str, list[int]] = defaultdict(list)
    for m in got:
        event = m.event()
        assert event.type == "test.event" and event.source == "tests"
        seqs[m.key].append(event.data["seq"])
    assert sum(len(v) for v in seqs.values()) == 300
    for key, values in seqs.items():
        assert values == sorted(values), f"key {key} out of order"
        assert len(set(values)) == len(values)


async def test_uncommitted_batch_is_redelivered_after_a_crash(bus: Bus) -> None:
    await bus.publish(TOPIC, make_events(40, keys=4, tag="crash"))
    first = bus.consumer("g-crash", [TOPIC])
    await first.start()
    seen = await drain(first, 40, commit=False)
    assert len(seen) == 40
    # Commit only the first half of one partition's messages, then "crash": no stop(), no more commits.
    by_partition: dict[int, list[Message]] = defaultdict(list)
    for m in seen:
        by_partition[m.partition].append(m)
    _, msgs = sorted(by_partition.items())[0]
    committed = msgs[: len(msgs) // 2]
    await first.commit(committed)
    if hasattr(first, "_consumer"):  # Kafka: a dead member's session is dropped when its socket closes
        await first.stop()
    second = bus.consumer("g-crash", [TOPIC])
    await second.start()
    try:
        again = await drain(second, 40 - len(committed), timeout=40)
    finally:
        await second.stop()
    ids_again = {m.headers["ce_id"] for m in again}
    expected = {m.headers["ce_id"] for m in seen} - {m.headers["ce_id"] for m in committed}
    assert expected <= ids_again, f"lost after crash: {sorted(expected - ids_again)[:5]}"
    assert not ({m.headers["ce_id"] for m in committed} & ids_again), "committed messages came back"


async def test_two_members_share_partitions_without_loss(bus: Bus) -> None:
    n = 400
    consumers = [bus.consumer("g-share", [TOPIC]) for _ in range(2)]
    for c in consumers:
        await c.start()
    got: list[list[Message]] = [[], []]
    done = asyncio.Event()

    async def run(i: int) -> None:
        while not done.is_set():
            batch = await consumers[i].poll(0.3, 50)
            got[i] += batch
            if batch:
                await consumers[i].commit(batch)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(run(i)) for i in range(2)]
    try:
        # Both members hold partitions once the group has settled (a rebalance, or lease hand-over).
        deadline = time.monotonic() + 40
        while not all(c.assignment() for c in consumers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert all(c.assignment() for c in consumers), "the group never gave the second member a partition"
        assert not (consumers[0].assignment() & consumers[1].assignment()), "a partition has two owners"
        await bus.publish(TOPIC, make_events(n, keys=40, tag="share"))
        while time.monotonic() < deadline:
            ids = {m.headers["ce_id"] for batch in got for m in batch}
            if len(ids) == n and all(c.assignment() for c in consumers):
                break
            await asyncio.sleep(0.1)
    finally:
        done.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in consumers:
            await c.stop()
    ids = {m.headers["ce_id"] for batch in got for m in batch}
    assert len(ids) == n, f"lost {n - len(ids)} messages"
    assert all(c_got for c_got in got), "one member never received anything: partitions were not shared"
