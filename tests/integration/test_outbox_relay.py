"""Relays of several processes share one PostgreSQL outbox; only one publishes at a time (an advisory
lock). A relay that finds the lock taken waits in line for it only for rows its own process queued:
the rows of other processes are their relays' work, and polling for them every 5 ms cost each service
a tenth of its CPU under load (py-spy, e2e at 1,000 tp/s). It waits in one statement rather than
polling: at 1,000 tp/s, retries of a busy lock were 60 % of the relays' rounds. And rows committed
while a round runs are published by the next round at once, not by the idle poll."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text

from services.db.database import Database
from services.db.models import outbox
from services.events import Event, Outgoing
from services.outbox import LOCK_WAIT_MS, RELAY_LOCK_ID, OutboxRelay, add_events
from tests.support.buses import RecordingBus
from tests.support.polling import eventually

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("database_url", ["postgres"], indirect=True)]

WINDOW = 0.5  # seconds the lock is held while a relay's attempts are counted


class CountingRelay(OutboxRelay):
    attempts = 0

    async def relay_once(self, *, wait: bool = False) -> int:
        self.attempts += 1
        return await super().relay_once(wait=wait)


def event(event_id: str) -> Event:
    return Event(id=event_id, type="lead.scored", source="test", time=datetime.now(UTC), key="lead-1",
                 data={"lead_id": "lead-1"})


async def queue(db: Database, event_id: str) -> None:
    async with db.transaction() as conn:
        await add_events(conn, "lead-events", [event(event_id)])


async def attempts_while_locked(database_url: str, *, own_rows: bool,
                                idle_interval: float = 0.2) -> tuple[int, list[str]]:
    """Hold the relay lock for WINDOW seconds with a row queued (by this relay's process or by
    another), count the relay's attempts meanwhile; then let go and wait for the row to be published."""
    mine, other, holder = Database(database_url), Database(database_url), Database(database_url)
    bus = RecordingBus()
    relay = CountingRelay(mine, bus, idle_interval=idle_interval)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with holder.transaction() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": RELAY_LOCK_ID})
            await queue(mine if own_rows else other, "e-1")
            relay.attempts = 0
            await asyncio.sleep(WINDOW)  # an observation window, not a synchronisation
            attempts = relay.attempts
        for _ in range(200):  # the lock is free: the row goes out (within the idle interval at the latest)
            if bus.published:
                break
            await asyncio.sleep(0.025)
        async with mine.read() as conn:
            assert (await conn.execute(select(func.count()).select_from(outbox))).scalar_one() == 0
        return attempts, bus.published
    finally:
        stop.set()
        await task
        for db in (mine, other, holder):
            await db.dispose()


async def test_a_relay_does_not_spin_on_the_lock_for_rows_another_process_queued(database_url: str) -> None:
    attempts, published = await attempts_while_locked(database_url, own_rows=False)
    assert published == ["e-1"]
    # Idle polling (every 0.2 s) only; retrying every 5 ms would have made about 100 attempts.
    assert attempts <= 5, f"{attempts} attempts in {WINDOW}s while another relay held the lock"


async def test_a_relay_waits_in_line_for_the_lock_for_rows_its_own_process_queued(database_url: str) -> None:
    # An idle poll far beyond the test's wait: only a relay waiting for the lock publishes the row.
    attempts, published = await attempts_while_locked(database_url, own_rows=True, idle_interval=60.0)
    assert published == ["e-1"], "this process's row waited for the idle poll once the lock was free"
    # One waiting round per LOCK_WAIT_MS (and the round the commit woke), not a retry every 5 ms.
    assert attempts <= WINDOW * 1000 / LOCK_WAIT_MS + 2, f"{attempts} attempts in {WINDOW}s: polling the lock"


async def test_a_relay_waiting_for_the_lock_gives_up_after_the_lock_wait(database_url: str) -> None:
    """The wait is bounded: a relay stuck behind a holder comes back (to see ``stop``) and keeps its rows."""
    mine, holder = Database(database_url), Database(database_url)
    bus = RecordingBus()
    relay = OutboxRelay(mine, bus)
    try:
        await queue(mine, "e-1")
        async with holder.transaction() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": RELAY_LOCK_ID})
            assert await relay.relay_once(wait=True) == -1
        assert await relay.relay_once(wait=True) == 1
        # A round sends what it read at once: with the lock held, a linger would hold every relay.
        assert bus.gathered == [True]
    finally:
        for db in (mine, holder):
            await db.dispose()


class CommittingDuringRound(OutboxRelay):
    """Commits a row of its own process right after its first round has read the outbox, as a
    consumer's transaction does when it commits while the relay is publishing."""

    committed = False

    async def relay_once(self, *, wait: bool = False) -> int:
        moved = await super().relay_once(wait=wait)
        if not self.committed:
            self.committed = True
            await queue(self.db, "e-during")
        return moved


async def test_rows_committed_while_a_round_runs_go_out_without_waiting_for_the_idle_poll(
        database_url: str) -> None:
    db = Database(database_url)
    bus = RecordingBus()
    # An idle poll far beyond the wait below: only the commit's wake-up can publish the row in time.
    relay = CommittingDuringRound(db, bus, idle_interval=60.0)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        for _ in range(200):
            if bus.published:
                break
            await asyncio.sleep(0.025)
        assert bus.published == ["e-during"], "the row waited for the idle poll: its wake-up was lost"
    finally:
        stop.set()
        await task
        await db.dispose()


class HeldBus(RecordingBus):
    """Publishes once ``release`` is set: meanwhile its relay holds the lock, its rows deleted but not
    committed (a publish to a slow broker)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def publish(self, topic: str, events: Sequence[Outgoing], *, gathered: bool = False) -> None:
        self.entered.set()
        await self.release.wait()
        await super().publish(topic, events, gathered=gathered)


async def test_a_relay_waiting_in_line_publishes_only_the_rows_the_holder_did_not_take(database_url: str) -> None:
    """The waiting relay's statement reads the outbox before its wait ends (the lock and the delete are
    one statement): the rows the holder takes meanwhile are skipped, not published twice, and the rest
    go out once the lock is free."""
    holder_db, waiter_db, observer = Database(database_url), Database(database_url), Database(database_url)
    holder_bus, waiter_bus = HeldBus(), RecordingBus()
    holder, waiter = OutboxRelay(holder_db, holder_bus), OutboxRelay(waiter_db, waiter_bus)

    async def waiting_for_the_lock() -> bool:
        async with observer.read() as conn:
            return bool((await conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))).scalar())

    try:
        await queue(holder_db, "e-1")
        holding = asyncio.create_task(holder.relay_once(wait=True))
        await asyncio.wait_for(holder_bus.entered.wait(), 10)  # lock held, e-1 deleted, not committed
        await queue(waiter_db, "e-2")
        waiting = asyncio.create_task(waiter.relay_once(wait=True))
        await eventually(waiting_for_the_lock, 10, "the second relay to wait for the lock")
        holder_bus.release.set()
        assert await holding == 1
        assert await waiting == 1
        assert (holder_bus.published, waiter_bus.published) == (["e-1"], ["e-2"])
        async with observer.read() as conn:
            assert (await conn.execute(select(func.count()).select_from(outbox))).scalar() == 0
    finally:
        for db in (holder_db, waiter_db, observer):
            await db.dispose()
