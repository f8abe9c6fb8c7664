"""Durable, deduplicated, fast: the group-commit writer behind every ingest endpoint.

    writer = TouchpointWriter(sink)
    task = asyncio.create_task(writer.run(stop))
    result = await writer.submit(touchpoints)     # returns once they are durable; raises Unavailable

Concurrent requests hand their touchpoints to one writer task, which makes whatever has gathered
durable in one go (one database transaction, or one Kafka batch) and then answers every request.
Each answer still waits for its own touchpoints' durability. The queue is bounded: when it is full
the request waits a little, then gets 503 (back-pressure, never an unbounded buffer).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from services.bus.base import Bus, BusError
from services.bus.local import LocalBus
from services.db.database import Database
from services.db.dialect import insert_ignore
from services.db.models import ingest_events
from services.events import TOUCHPOINT_RECEIVED, TOUCHPOINTS, Event, Touchpoint

log = logging.getLogger(__name__)


class Unavailable(Exception):
    """The touchpoints could not be made durable (bus or database down): answer 503 with Retry-After."""


@dataclass(frozen=True)
class WriteResult:
    accepted: int
    duplicates: int


def to_event(tp: Touchpoint) -> Event:
    return Event(id=tp.event_id, type=TOUCHPOINT_RECEIVED, source=f"ingest/{tp.source}", time=tp.received_at,
                 key=tp.identity_key(), data=tp.model_dump(mode="json"))


class Sink(ABC):
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
            inserted = await conn.execute(
                insert_ignore(conn, ingest_events).returning(ingest_events.c.event_id),
                [{"event_id": t.event_id, "source": t.source, "received_at": t.received_at} for t in touchpoints],
            )
            fresh = set(inserted.scalars())
            await self.bus.publish_in(conn, TOUCHPOINTS, [to_event(t) for t in touchpoints if t.event_id in fresh])
        return fresh


class KafkaSink(Sink):
    """Produce (acks=all) first, then remember the ids: a crash in between only re-produces a duplicate,
    which every consumer drops by event id; remembering first could lose a touchpoint."""

    def __init__(self, db: Database, bus: Bus) -> None:
        self.db = db
        self.bus = bus

    async def write(self, touchpoints: Sequence[Touchpoint]) -> set[str]:
        ids = [t.event_id for t in touchpoints]
        async with self.db.read() as conn:
            seen = set((await conn.execute(
                select(ingest_events.c.event_id).where(ingest_events.c.event_id.in_(ids)))).scalars())
        fresh = [t for t in touchpoints if t.event_id not in seen]
        if not fresh:
            return set()
        await self.bus.publish(TOUCHPOINTS, [to_event(t) for t in fresh])
        async with self.db.transaction() as conn:
            await conn.execute(insert_ignore(conn, ingest_events), [
                {"event_id": t.event_id, "source": t.source, "received_at": t.received_at} for t in fresh])
        return {t.event_id for t in fresh}


@dataclass
class _Pending:
    touchpoints: list[Touchpoint]
    future: asyncio.Future[WriteResult]


class TouchpointWriter:
    def __init__(self, sink: Sink, *, max_batch: int = 2000, max_queue: int = 20000,
                 enqueue_timeout: float = 2.0) -> None:
        self.sink = sink
        self.max_batch = max_batch
        self.enqueue_timeout = enqueue_timeout
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max(1, max_queue // 50))
        self._stopped = False

    async def submit(self, touchpoints: list[Touchpoint]) -> WriteResult:
        if not touchpoints:
            return WriteResult(0, 0)
        if self._stopped:
            raise Unavailable("ingest is shutting down")
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._queue.put(_Pending(touchpoints, future)), self.enqueue_timeout)
        except TimeoutError:
            raise Unavailable("ingest is saturated; retry shortly") from None
        return await future

    async def run(self, stop: asyncio.Event) -> None:
        stop_task = asyncio.ensure_future(stop.wait())
        try:
            while True:
                if stop.is_set() and self._queue.empty():
                    return
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
                await self._write(batch)
        finally:
            self._stopped = True
            stop_task.cancel()
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
