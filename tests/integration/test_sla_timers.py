"""Two notifiers' SLA clocks on one database: every due timer is claimed and resolved exactly once.

The timers came due while the notifiers were down, so each lead's reminder and breach are due at the
same instant. Every breach fires. A reminder fires, unless the other clock committed that lead's breach
first: then it is cancelled (a "half the time is gone" reminder after the breach is noise), never both.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from notifier.timers import SlaClock
from services.config import load_config
from services.db.database import Database
from services.db.models import deliveries, lead_sla, sla_timers
from services.events import utcnow

pytestmark = pytest.mark.integration
LEADS = 150


async def _seed(db: Database, now: datetime, fire_at: dict[str, datetime], leads: int) -> None:
    """``leads`` running SLAs, each with a reminder (half time) and a breach timer firing at ``fire_at[kind]``."""
    async with db.transaction() as conn:
        await conn.execute(lead_sla.insert(), [
            {"lead_id": f"L{i}", "assignment_id": f"A{i}", "rep_id": "anna", "due_at": now, "state": "running",
             "reminders_sent": 0, "paged": False, "started_at": now - timedelta(minutes=30)} for i in range(leads)])
        await conn.execute(sla_timers.insert(), [
            {"lead_id": f"L{i}", "assignment_id": f"A{i}", "rep_id": "anna", "kind": kind, "fraction": fraction,
             "due_at": now, "fire_at": fire_at[kind], "status": "pending"}
            for i in range(leads) for kind, fraction in (("reminder", 0.5), ("breach", 1.0))])


@pytest.mark.parametrize("database_url", ["postgres", "sqlite"], indirect=True)
async def test_two_clocks_resolve_each_timer_once(database_url: str, db: Database) -> None:
    config = load_config(None)
    now = utcnow()
    await _seed(db, now, {"reminder": now - timedelta(seconds=1), "breach": now - timedelta(seconds=1)}, LEADS)
    clocks = [SlaClock(Database(database_url), config, batch=20) for _ in range(2)]
    try:
        async def drain(clock: SlaClock) -> int:
            fired = 0
            while (n := await clock.fire_due(utcnow())):
                fired += n
            return fired

        counts = await asyncio.gather(*(drain(c) for c in clocks))
    finally:
        for c in clocks:
            await c.db.dispose()
    async with db.read() as conn:
        statuses = {(kind, status): n for kind, status, n in (await conn.execute(
            select(sla_timers.c.kind, sla_timers.c.status, func.count()).group_by(
                sla_timers.c.kind, sla_timers.c.status))).all()}
        sla_rows = {row.lead_id: row for row in (await conn.execute(select(lead_sla))).all()}
        cancelled_leads = set((await conn.execute(select(sla_timers.c.lead_id).where(
            sla_timers.c.kind == "reminder", sla_timers.c.status == "cancelled"))).scalars())
        keys = list((await conn.execute(select(deliveries.c.idempotency_key))).scalars())
    assert sum(counts) == 2 * LEADS, counts  # each timer claimed by exactly one clock
    assert statuses[("breach", "fired")] == LEADS, statuses
    reminders_fired = statuses.get(("reminder", "fired"), 0)
    assert reminders_fired + len(cancelled_leads) == LEADS, statuses
    assert set(statuses) <= {("breach", "fired"), ("reminder", "fired"), ("reminder", "cancelled")}, statuses
    assert all(row.state == "breached" for row in sla_rows.values())
    assert sum(row.reminders_sent for row in sla_rows.values()) == reminders_fired
    assert all(sla_rows[lead].reminders_sent == 0 for lead in cancelled_leads), "a cancelled reminder was counted"
    assert len(keys) == len(set(keys)), "an alert was queued twice"
    print(f"two clocks resolved {counts} timers ({len(cancelled_leads)} reminders overtaken by their breach); "
          f"{len(keys)} alert deliveries queued")


@pytest.mark.parametrize("database_url", ["postgres", "sqlite"], indirect=True)
async def test_a_reminder_overtaken_by_its_breach_is_cancelled_not_sent(database_url: str, db: Database) -> None:
    # What the other clock's committed breach looks like to a reminder claimed after it.
    now = utcnow()
    await _seed(db, now, {"breach": now - timedelta(seconds=2), "reminder": now - timedelta(seconds=1)}, 1)
    clock = SlaClock(Database(database_url), load_config(None), batch=1)
    try:
        assert await clock.fire_due(utcnow()) == 1
        assert await clock.fire_due(utcnow()) == 1
        assert await clock.fire_due(utcnow()) == 0
    finally:
        await clock.db.dispose()
    async with db.read() as conn:
        statuses = dict((await conn.execute(select(sla_timers.c.kind, sla_timers.c.status))).all())
        sla = (await conn.execute(select(lead_sla))).one()
        kinds = set((await conn.execute(select(deliveries.c.kind))).scalars())
    assert statuses == {"breach": "fired", "reminder": "cancelled"}
    assert sla.state == "breached" and sla.reminders_sent == 0
    assert kinds == {"sla_breach"}, "the overtaken reminder queued an alert"
