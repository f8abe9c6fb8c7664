"""The group-commit writer: gatherings in flight at once where the sink allows it, every request
answered (also at shutdown), and on PostgreSQL an id claimed once across concurrent gatherings."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from ingest.writer import KafkaSink, Sink, TouchpointWriter, Unavailable, WriteResult
from services.bus.base import Bus, BusUnavailable, Consumer
from services.db.database import Database
from services.events import Outgoing, Touchpoint, utcnow

pytestmark = pytest.mark.integration


def tp(event_id: str) -> Touchpoint:
    now = utcnow()
    return Touchpoint(event_id=event_id, type="page_view", occurred_at=now, received_at=now, source="web",
                      anonymous_id=f"anon-{event_id}")


class GatedSink(Sink):
    """Holds every write until ``gate`` opens; records how many were in flight at once."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.writes: list[list[str]] = []

    async def write(self, touchpoints: Sequence[Touchpoint]) -> set[str]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.writes.append([t.event_id for t in touchpoints])
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        return {t.event_id for t in touchpoints}


async def _until(condition: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def _started(sink: GatedSink, parallel_min: int
                   ) -> tuple[TouchpointWriter, asyncio.Event, asyncio.Task[None], asyncio.Task[WriteResult]]:
    """A running writer over ``sink``: (writer, its stop event, its task, a first request "a" held in flight)."""
    writer = TouchpointWriter(sink, parallel_min=parallel_min)
    stop = asyncio.Event()
    runner = asyncio.create_task(writer.run(stop))
    first = asyncio.create_task(writer.submit([tp("a")]))
    await _until(lambda: sink.in_flight == 1)
    return writer, stop, runner, first


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_gatherings_in_flight_at_once_never_exceed_the_sinks_concurrency(concurrency: int) -> None:
    sink = GatedSink(concurrency)
    writer, stop, runner, first = await _started(sink, parallel_min=1)
    second = asyncio.create_task(writer.submit([tp("b")]))
    if concurrency > 1:
        await _until(lambda: sink.in_flight == 2)  # a second gathering while the first is held
    third = asyncio.create_task(writer.submit([tp("c")]))
    await asyncio.sleep(0.05)  # room for a write the writer should not start
    assert (sink.in_flight, sink.most_in_flight) == (concurrency, concurrency)
    sink.gate.set()
    results = await asyncio.gather(first, second, third)
    assert results == [WriteResult(1, 0)] * 3
    # Requests that queued while every slot was busy went out together in one later gathering.
    assert sink.writes == ([["a"], ["b", "c"]] if concurrency == 1 else [["a"], ["b"], ["c"]])
    stop.set()
    await runner


async def test_a_small_gathering_waits_for_the_one_in_flight() -> None:
    sink = GatedSink(2)
    writer, stop, runner, first = await _started(sink, parallel_min=3)
    small = asyncio.create_task(writer.submit([tp("b")]))
    await asyncio.sleep(0.05)
    assert sink.in_flight == 1  # one touchpoint waiting: not worth a second gathering beside the first
    more = asyncio.create_task(writer.submit([tp("c"), tp("d")]))
    await _until(lambda: sink.in_flight == 2)  # three waiting: they go out beside the first
    assert sink.writes == [["a"], ["b", "c", "d"]]
    sink.gate.set()
    assert await asyncio.gather(first, small, more) == [WriteResult(1, 0), WriteResult(1, 0), WriteResult(2, 0)]
    sink.gate.clear()
    lone = asyncio.create_task(writer.submit([tp("e")]))  # nothing in flight: it goes at once
    await _until(lambda: sink.in_flight == 1)
    sink.gate.set()
    assert await lone == WriteResult(1, 0)
    stop.set()
    await runner


async def test_stopping_answers_the_writes_in_flight_and_refuses_the_rest() -> None:
    sink = GatedSink(2)
    writer, stop, runner, first = await _started(sink, parallel_min=1)
    flying = [first, asyncio.create_task(writer.submit([tp("b")]))]
    await _until(lambda: sink.in_flight == 2)
    stop.set()
    await asyncio.sleep(0.05)
    assert not runner.done()  # it waits for its writes
    sink.gate.set()
    await runner
    assert [f.result() for f in flying] == [WriteResult(1, 0)] * 2
    with pytest.raises(Unavailable):
        await writer.submit([tp("late")])


class HeldBus(Bus):
    """A bus whose publish waits for ``release`` and then succeeds; the first ``failures`` fail."""

    def __init__(self, failures: int = 0) -> None:
        self.release = asyncio.Event()
        self.failures = failures
        self.waiting = 0
        self.published: list[str] = []
        self.gathered: list[bool] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ping(self) -> None: ...

    async def publish(self, topic: str, events: Sequence[Outgoing], *, gathered: bool = False) -> None:
        self.waiting += 1
        self.gathered.append(gathered)
        await self.release.wait()
        if self.failures:
            self.failures -= 1
            raise BusUnavailable("held bus: refused")
        self.published += [e.id for e in events]

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        raise NotImplementedError


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_concurrent_gatherings_on_postgres_count_each_id_once(db: Database) -> None:
    bus = HeldBus()
    sink = KafkaSink(db, bus)
    assert sink.concurrency > 1
    first = asyncio.create_task(sink.write([tp("x1"), tp("x2"), tp("x3")]))
    await _until(lambda: bus.waiting == 1)  # the first holds x1..x3 claimed, waiting for Kafka
    second = asyncio.create_task(sink.write([tp("x3"), tp("x2"), tp("y1")]))
    await asyncio.sleep(0.1)
    assert bus.waiting == 1 and not second.done()  # its claim waits for the first's commit
    bus.release.set()
    assert await asyncio.wait_for(first, 10) == {"x1", "x2", "x3"}
    assert await asyncio.wait_for(second, 10) == {"y1"}
    assert sorted(bus.published) == ["x1", "x2", "x3", "y1"]
    assert bus.gathered == [True, True]  # a gathering is sent at once, not after the producer's linger


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_an_id_whose_produce_failed_is_claimed_by_the_next_gathering(db: Database) -> None:
    bus = HeldBus(failures=1)
    sink = KafkaSink(db, bus)
    first = asyncio.create_task(sink.write([tp("z1")]))
    await _until(lambda: bus.waiting == 1)
    second = asyncio.create_task(sink.write([tp("z1")]))
    await asyncio.sleep(0.05)
    assert bus.waiting == 1  # the second waits for the first's claim of z1
    bus.release.set()
    with pytest.raises(BusUnavailable):
        await asyncio.wait_for(first, 10)
    assert await asyncio.wait_for(second, 10) == {"z1"}
    assert bus.published == ["z1"]
