"""The consumer loop commits offsets after handling, at most every ``commit_interval`` while batches keep
coming, and at once when the stream runs dry or the runner stops."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from services.bus.base import Consumer, Message
from services.consumer import ConsumerRunner, Handler
from services.db.database import Database
from services.events import LEAD_EVENTS, LEAD_SCORED, Event
from tests.support.buses import OneConsumerBus


def message(offset: int, partition: int = 0) -> Message:
    event = Event.new(LEAD_SCORED, source="test", key=f"L{offset}", data={"lead_id": f"L{offset}"})
    return Message(LEAD_EVENTS, partition, offset, event.key, event.value(), event.headers())


class Scripted(Consumer):
    """Hands out the given batches, one per poll; then empty polls (or, if ``endless``, more batches)."""

    def __init__(self, batches: list[list[Message]], *, endless: bool = False) -> None:
        self.batches = batches
        self.endless = endless
        self.next_offset = max((m.offset for b in batches for m in b), default=-1) + 1
        self.commits: list[dict[tuple[str, int], int]] = []
        self.handed_out = 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Message]:
        await asyncio.sleep(0)
        if self.batches:
            batch = self.batches.pop(0)
        elif self.endless:
            batch = [message(self.next_offset)]
            self.next_offset += 1
        else:
            return []
        self.handed_out += 1
        return batch

    async def commit(self, messages: Sequence[Message]) -> None:
        offsets: dict[tuple[str, int], int] = {}
        for m in messages:
            offsets[(m.topic, m.partition)] = max(offsets.get((m.topic, m.partition), 0), m.offset + 1)
        self.commits.append(offsets)


class Recorder(Handler):
    group = "test"
    topics = (LEAD_EVENTS,)

    def __init__(self, consumer: Scripted, stop_after: int | None = None, stop: asyncio.Event | None = None) -> None:
        self.consumer = consumer
        self.handled: list[str] = []
        self.commits_seen_at_handle: list[int] = []
        self.stop_after = stop_after
        self.stop = stop

    async def handle(self, events: list[Event]) -> None:
        self.handled += [e.key for e in events]
        self.commits_seen_at_handle.append(len(self.consumer.commits))
        if self.stop is not None and self.stop_after is not None and len(self.handled) >= self.stop_after:
            self.stop.set()


async def run_until(runner: ConsumerRunner, stop: asyncio.Event, done: asyncio.Event | None = None) -> None:
    task = asyncio.create_task(runner.run(stop))
    if done is not None:
        await asyncio.wait_for(done.wait(), 10)
        stop.set()
    await asyncio.wait_for(task, 10)


def database(tmp_path: Path) -> Database:
    return Database(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")  # only dead letters would use it


async def test_back_to_back_batches_share_a_commit_and_a_dry_stream_commits_at_once(tmp_path: Path) -> None:
    consumer = Scripted([[message(i)] for i in range(50)])
    handler = Recorder(consumer)
    stop = asyncio.Event()
    runner = ConsumerRunner(database(tmp_path), OneConsumerBus(consumer), handler, poll_timeout=0.01,
                            commit_interval=3600)
    task = asyncio.create_task(runner.run(stop))
    while not consumer.commits or consumer.commits[-1] != {(LEAD_EVENTS, 0): 50}:
        await asyncio.sleep(0.001)  # polled: the empty poll after the 50th batch commits
    stop.set()
    await asyncio.wait_for(task, 10)
    assert len(handler.handled) == 50
    # The first batch commits (nothing was committed yet), the other 49 wait for the empty poll.
    assert consumer.commits == [{(LEAD_EVENTS, 0): 1}, {(LEAD_EVENTS, 0): 50}]


async def test_an_interval_of_zero_commits_after_every_batch(tmp_path: Path) -> None:
    consumer = Scripted([[message(i), message(100 + i, partition=1)] for i in range(5)])
    handler = Recorder(consumer)
    runner = ConsumerRunner(database(tmp_path), OneConsumerBus(consumer), handler, poll_timeout=0.01,
                            commit_interval=0)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    while len(consumer.commits) < 5:
        await asyncio.sleep(0.001)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert consumer.commits == [{(LEAD_EVENTS, 0): i + 1, (LEAD_EVENTS, 1): 101 + i} for i in range(5)]
    # Each batch's commit came after its handling: the handler saw only the earlier batches' commits.
    assert handler.commits_seen_at_handle == [0, 1, 2, 3, 4]


async def test_stopping_commits_every_batch_handled_so_far(tmp_path: Path) -> None:
    consumer = Scripted([], endless=True)  # never an empty poll: only the stop can commit
    stop = asyncio.Event()
    handler = Recorder(consumer, stop_after=30, stop=stop)
    runner = ConsumerRunner(database(tmp_path), OneConsumerBus(consumer), handler, poll_timeout=0.01,
                            commit_interval=3600)
    await run_until(runner, stop)
    assert len(handler.handled) == 30
    assert consumer.commits[-1] == {(LEAD_EVENTS, 0): 30}
    assert len(consumer.commits) == 2  # the first batch, then the stop
