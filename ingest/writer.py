"""Durable, deduplicated, fast: the group-commit writer behind every ingest endpoint.

    writer = TouchpointWriter(sink)
    task = asyncio.create_task(writer.run(stop))
    result = await writer.submit(touchpoints)     # returns once they are durable; raises Unavailable

Concurrent requests hand their touchpoints to one writer task, which makes whatever has gathered
durable in one go (one database transaction, or one Kafka batch) and then answers every request.
Each answer still waits for its own touchpoints' durability. Where the sink allows it
(``Sink.concurrency``: Kafka with PostgreSQL) and enough touchpoints wait (``parallel_min``),
several gatherings are in flight at once, so that the process is not idle while Kafka acknowledges
one. The queue is bounded: when it is full the request waits a little, then gets 503 (back-pressure,
never an unbounded buffer).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.bus.base import Bus, BusError
from services.bus.local import LocalBus
from services.db.bulk import existing, insert_many, insert_new
from services.db.database import Database
from services.db.models import ingest_events
from services.events import TOUCHPOINT_RECEIVED, TOUCHPOINTS, Touchpoint, WireEvent

log = logging.getLogger(__name__)


class Unavailable(Exception):
    """The touchpoints could not be made durable (bus or database down): answer 503 with Retry-After."""


@dataclass(frozen=True)
class WriteResult:
    accepted: int
    duplicates: int


def to_events(touchpoints: Sequence[Touchpoint]) -> list[WireEvent]:
    """The ``touchpoint.received`` event of each touchpoint, in wire form: its value is the touchpoint's
    JSON, which a consumer reads back (``Event.from_wire(...).data``) as ``tp.model_dump(mode="json")``.
    The serializer is called directly for bytes: ``model_dump_json`` returns text (1.8 vs 1.3 µs each)."""
    return [WireEvent(tp.event_id, TOUCHPOINT_RECEIVED, f"ingest/{tp.source}", tp.received_at, tp.identity_key(),
                      tp.__pydantic_serializer__.to_json(tp)) for tp in touchpoints]


def to_event(tp: Touchpoint) -> WireEvent:
    return to_events([tp])[0]


def _id_rows(touchpoints: Sequence[Touchpoint]) -> list[tuple[str, str, datetime]]:
    return [(t.event_id, t.source, t.received_at) for t in touchpoints]


_ID_COLUMNS = ("event_id", "source", "received_at")


class Sink(ABC):
    #: How many gatherings may be in flight at once. One where a write holds the database's only
    #: write lock anyway (SQLite), or where a second write could not see the first's ids yet.
    concurrency = 1

    @abstractmethod
    async def write(self, touchpoints: Sequence[Touchpoint]) -> set[str]:
        """Make the new touchpoints durable; return the event ids that were new (the rest are duplicates)."""


class EmbeddedSink(Sink):
    """Dedupe ids and the bus log in ONE transaction: a committed id always has its message."""

    def __init__(self, db: Database, bus: LocalBus) -> None:
        self.db = db
        self.bus = bus

    async def write(self, touchpoints: Sequence[Touchpoint]) -> set[str]:
        async with self.db.transaction() as conn:
            fresh = set(await insert_new(conn, ingest_events, _ID_COLUMNS, _id_rows(touchpoints)))
            await self.bus.publish_in(conn, TOUCHPOINTS, to_events([t for t in touchpoints if t.event_id in fresh]))
        return fresh


class KafkaSink(Sink):
    """Produce (acks=all) first, then remember the ids (on PostgreSQL: commit the claim of the ids only
    after the produce): a crash in between only re-produces a duplicate, which every consumer drops by
    event id; remembering first could lose a touchpoint."""

    def __init__(self, db: Database, bus: Bus) -> None:
        self.db = db
        self.bus = bus
        # On PostgreSQL most of a write is waiting for Kafka's acknowledgement with the ids' rows
        # locked; other gatherings can be claimed and produced meanwhile (4: the split bench's CPU
        # was still idle with 2). A claim of an id another gathering holds waits for its commit and
        # then counts it as a duplicate, or claims it if that one rolled back.
        self.concurrency = 4 if db.is_postgres else 1

    async def write(self, touchpoints: Sequence[Touchpoint]) -> set[str]:
        if self.db.is_postgres:
            # Claim the ids, produce, then commit: the claim becomes durable only once Kafka has the
            # messages (a failed produce rolls it back), one statement finds the new ids through the
            # primary key (no lookup whose cached plan could go stale as the table grows), and a
            # concurrent request with the same id waits on the row and then counts as a duplicate.
            # Ids claimed in sorted order: two gatherings in flight lock shared ids in one order and
            # cannot deadlock.
            async with self.db.transaction() as conn:
                new = set(await insert_new(conn, ingest_events, _ID_COLUMNS, sorted(_id_rows(touchpoints))))
                if new:
                    await self.bus.publish(TOUCHPOINTS, to_events([t for t in touchpoints if t.event_id in new]),
                                           gathered=True)
            return new
        # SQLite: a write transaction holds the database's only write lock; not while Kafka answers.
        async with self.db.read() as conn:
            fresh = await self._fresh(conn, touchpoints)
        if not fresh:
            return set()
        await self.bus.publish(TOUCHPOINTS, to_events(fresh), gathered=True)
        async with self.db.transaction() as conn:
            await insert_many(conn, ingest_events, _ID_COLUMNS, _id_rows(fresh), ignore_conflicts=True)
        return {t.event_id for t in fresh}

    @staticmethod
    async def _fresh(conn: AsyncConnection, touchpoints: Sequence[Touchpoint]) -> list[Touchpoint]:
        seen = await existing(conn, ingest_events.c.event_id, [t.event_id for t in touchpoints])
        return [t for t in touchpoints if t.event_id not in seen]


@dataclass
class _Pending:
    touchpoints: list[Touchpoint]
    future: asyncio.Future[WriteResult]


class TouchpointWriter:
    """``parallel_min``: while a gathering is in flight, another starts only once this many touchpoints
    wait (or when none is in flight). Each gathering costs a transaction and a produce request; a
    small one beside a running one (64 single-touchpoint requests spread over 4) cost more CPU than
    it saved waiting, while batches of 500 gain from overlapping (``handoff bench``, split mode)."""

    def __init__(self, sink: Sink, *, max_batch: int = 2000, max_queue: int = 20000,
                 enqueue_timeout: float = 2.0, parallel_min: int = 256) -> None:
        self.sink = sink
        self.max_batch = max_batch
        self.enqueue_timeout = enqueue_timeout
        self.parallel_min = parallel_min
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max(1, max_queue // 50))
        self._queued = 0  # touchpoints waiting in the queue
        self._enough = asyncio.Event()  # set when parallel_min wait, a write ends, or on stop
        self._stopped = False

    async def submit(self, touchpoints: list[Touchpoint]) -> WriteResult:
        if not touchpoints:
            return WriteResult(0, 0)
        if self._stopped:
            raise Unavailable("ingest is shutting down")
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        pending = _Pending(touchpoints, future)
        try:
            self._queue.put_nowait(pending)  # the usual case: no timer, no task
        except asyncio.QueueFull:
            try:
                await asyncio.wait_for(self._queue.put(pending), self.enqueue_timeout)
            except TimeoutError:
                raise Unavailable("ingest is saturated; retry shortly") from None
        self._queued += len(touchpoints)
        if self._queued >= self.parallel_min:
            self._enough.set()
        return await future

    async def run(self, stop: asyncio.Event) -> None:
        stop_task = asyncio.ensure_future(stop.wait())
        writes: set[asyncio.Task[None]] = set()  # the gatherings in flight

        def done(task: asyncio.Task[None]) -> None:
            writes.discard(task)
            self._enough.set()

        stop_task.add_done_callback(lambda _task: self._enough.set())
        try:
            while True:
                if stop.is_set() and self._queue.empty():
                    return
                # Requests keep gathering while every slot is busy, or while a small gathering would
                # only run beside the one in flight (once stopping, the rest goes out as slots free).
                while len(writes) >= self.sink.concurrency or (
                        writes and self._queued < self.parallel_min and not stop.is_set()):
                    self._enough.clear()
                    await self._enough.wait()
                get = asyncio.ensure_future(self._queue.get())
                await asyncio.wait([get, stop_task], return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    continue
                batch = [get.result()]
                size = len(batch[0].touchpoints)
                while size < self.max_batch and not self._queue.empty():
                    item = self._queue.get_nowait()
                    batch.append(item)
                    size += len(item.touchpoints)
                self._queued -= size
                task = asyncio.create_task(self._write(batch))
                writes.add(task)
                task.add_done_callback(done)
        finally:
            self._stopped = True
            stop_task.cancel()
            if writes:  # every request in flight gets its answer (_write never raises)
                await asyncio.gather(*writes, return_exceptions=True)
            while not self._queue.empty():  # refuse what is left: the clients retry, nothing is lost
                self._queue.get_nowait().future.set_exception(Unavailable("ingest is shutting down"))

    async def _write(self, batch: list[_Pending]) -> None:
        # The same id twice in one gathering: the first is written, the others count as duplicates.
        unique: dict[str, Touchpoint] = {}
        for item in batch:
            for tp in item.touchpoints:
                unique.setdefault(tp.event_id, tp)
        try:
            fresh = await self.sink.write(list(unique.values()))
        except (SQLAlchemyError, OSError, BusError, TimeoutError) as exc:
            log.warning("ingest: could not make %d touchpoints durable: %s", len(unique), exc)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(Unavailable(str(exc)))
            return
        except Exception as exc:  # a bug: fail these requests loudly, keep the writer alive
            log.exception("ingest: unexpected error while writing")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(Unavailable(f"internal error: {type(exc).__name__}"))
            return
        claimed: set[str] = set()
        for item in batch:
            accepted = 0
            for tp in item.touchpoints:
                if tp.event_id in fresh and tp.event_id not in claimed:
                    claimed.add(tp.event_id)
                    accepted += 1
            if not item.future.done():
                item.future.set_result(WriteResult(accepted, len(item.touchpoints) - accepted))
