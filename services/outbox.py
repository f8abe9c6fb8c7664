"""Transactional outbox: state and outgoing events commit together; a relay publishes them afterwards.

    async with db.transaction() as conn:
        await conn.execute(update(leads)...)               # the state change
        await add_events(conn, LEAD_EVENTS, [event])        # and the events, in the SAME transaction
    relay = OutboxRelay(db, bus); await relay.run(stop)     # publishes, then deletes the rows

If the process dies after the commit, the rows are still there and the next relay publishes them;
if it dies after publishing but before deleting, they are published again: consumers are idempotent
by event id, so a duplicate changes nothing. On the embedded bus the relay moves rows into the log
in one transaction (no duplicate at all). One relay at a time per database (an advisory lock on
PostgreSQL, the single writer on SQLite) keeps per-lead order. A relay whose own process queued rows
waits in line for the lock (a blocking wait, bounded by ``lock_timeout``) instead of polling for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from itertools import groupby
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, true
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningDelete

from services.bus.base import Bus, BusError
from services.bus.local import LocalBus
from services.db.database import Database
from services.db.models import outbox
from services.events import Event

log = logging.getLogger(__name__)
RELAY_LOCK_ID = 74190002
LOCK_WAIT_MS = 500  # how long a relay with rows of its own waits in line before it looks at `stop` again
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when lock_timeout ends a wait


class _LockBusy(Exception):
    """Another process's relay held the lock for the whole wait: roll back, and try again."""


async def add_events(conn: AsyncConnection, topic: str, events: Sequence[Event]) -> None:
    """Queue ``events`` for ``topic`` inside the caller's transaction."""
    if not events:
        return
    await conn.execute(outbox.insert(), [
        {"topic": topic, "key": e.key, "event_id": e.id, "type": e.type, "source": e.source,
         "time": e.time, "data": e.data} for e in events
    ])
    mark_queued(conn)


def mark_queued(conn: AsyncConnection) -> None:
    """Say that this transaction queued outbox rows: the relay is woken once it commits. A writer that
    inserts its ``outbox`` rows itself (the scoring consumer, hundreds per batch in one statement)
    calls it; :func:`add_events` does it for you."""
    conn.info["outbox_dirty"] = True


class OutboxRelay:
    def __init__(self, db: Database, bus: Bus, *, batch_size: int = 1000, idle_interval: float = 0.2) -> None:
        self.db = db
        self.bus = bus
        self.batch_size = batch_size
        self.idle_interval = idle_interval
        self.published = 0
        self._wakeup = asyncio.Event()
        self._own_rows = False  # this process committed outbox rows since its relay last read them
        self._take = _take_statement(batch_size, in_line=False)
        self._take_in_line = _take_statement(batch_size, in_line=True)
        db.on_commit(self._on_commit)

    def _on_commit(self, flags: dict[str, Any]) -> None:
        if flags.get("outbox_dirty"):
            self._own_rows = True
            self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; database or bus failures back off and retry, never drop rows."""
        backoff = 0.1
        while not stop.is_set():
            # Cleared before the round reads: rows committed while it runs (after its read) set it
            # again and get the next round at once, not the idle poll.
            self._wakeup.clear()
            own_rows, self._own_rows = self._own_rows, False
            try:
                # Rows of our own are waiting: wait in line for the lock. Polling for it instead (a
                # round trip every 5 ms) was most of the relays' statements at 1,000 tp/s, with four
                # processes sharing the lock.
                moved = await self.relay_once(wait=own_rows)
                backoff = 0.1
            except (SQLAlchemyError, OSError, BusError) as exc:
                self._own_rows |= own_rows  # nothing was published
                log.warning("outbox relay: %s; retrying in %.1fs", exc, backoff)
                await _wait(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if moved < 0:  # another process's relay holds the lock
                # Our rows (if any) wait for the next round, which waits in line for the lock; the
                # holder's rows are its own work, and a commit of ours wakes us.
                self._own_rows |= own_rows
                if not self._own_rows:
                    await wait_any(stop, self._wakeup, self.idle_interval)
            elif moved < self.batch_size:
                await wait_any(stop, self._wakeup, self.idle_interval)

    async def relay_once(self, *, wait: bool = False) -> int:
        """Publish up to ``batch_size`` queued events; the number published, -1 if another relay is busy.

        ``wait``: on PostgreSQL, wait up to ``LOCK_WAIT_MS`` for a busy relay to finish rather than
        return -1 at once (the run loop waits when its own process has queued rows)."""
        try:
            return await self._relay(wait)
        except _LockBusy:
            return -1

    async def _relay(self, wait: bool) -> int:
        async with self.db.transaction() as conn:
            # Taken and deleted in one statement (a SELECT, then a DELETE naming every id, was one more
            # round trip with the relay lock held, and a new prepared statement for every count of ids).
            # If publishing fails, the transaction rolls back and the rows are there for the next round.
            if conn.dialect.name == "postgresql" and wait:
                taken = await _take_in_line(conn, self._take_in_line)
            else:
                if conn.dialect.name == "postgresql" and not (await conn.execute(
                        text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": RELAY_LOCK_ID})).scalar():
                    # Only if there is something to send: an idle relay must not spin on a busy one's lock.
                    pending = (await conn.execute(select(outbox.c.id).limit(1))).first()
                    return -1 if pending is not None else 0
                taken = (await conn.execute(self._take)).mappings().all()
            if not taken:
                return 0
            rows = sorted(taken, key=lambda r: r["id"])  # RETURNING promises no order
            for topic, group in groupby(rows, key=lambda r: r["topic"]):
                events = [Event(id=r["event_id"], type=r["type"], source=r["source"], time=r["time"],
                                key=r["key"], data=r["data"]) for r in group]
                if isinstance(self.bus, LocalBus):
                    await self.bus.publish_in(conn, topic, events)
                else:
                    # Everything this round sends is in hand, and the relay lock is held meanwhile (every
                    # other process's relay waits): no linger for messages that will not come.
                    await self.bus.publish(topic, events, gathered=True)
        self.published += len(rows)
        return len(rows)


def _take_statement(batch_size: int, *, in_line: bool) -> ReturningDelete[Any]:
    """Delete the oldest ``batch_size`` rows and return them. ``in_line`` (PostgreSQL): the same
    statement first waits in line for the relay lock, at most ``LOCK_WAIT_MS`` (the timeout is set
    for this transaction only), and deletes once it holds it: one round trip, not two. The lock is a
    CTE the rows join, so it is taken before the first row is deleted (and not at all when nothing
    is queued). The rows come from the statement's snapshot, taken before the wait: rows the lock's
    holder deletes meanwhile are skipped by the DELETE (READ COMMITTED), rows committed meanwhile wait
    for the next round, and per-lead order holds as before (a lead's later event is committed after
    its earlier one, so any snapshot holding the later holds the earlier)."""
    oldest = select(outbox.c.id)
    if in_line:
        held = select(func.set_config("lock_timeout", bindparam("ms", str(LOCK_WAIT_MS)), true()),
                      func.pg_advisory_xact_lock(bindparam("k", RELAY_LOCK_ID))).cte("held").prefix_with("MATERIALIZED")
        oldest = oldest.select_from(outbox.join(held, true()))
    return delete(outbox).where(outbox.c.id.in_(
        oldest.order_by(outbox.c.id).limit(batch_size).scalar_subquery())).returning(*outbox.c)


async def _take_in_line(conn: AsyncConnection, statement: ReturningDelete[Any]) -> Sequence[Any]:
    """Run an ``in_line`` take; raise ``_LockBusy`` when the wait for the lock runs out."""
    try:
        return (await conn.execute(statement)).mappings().all()
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            raise _LockBusy from exc
        raise


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Wait until ``stop`` or ``wake`` is set, or ``seconds`` pass."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
