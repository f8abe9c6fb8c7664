"""Two notifiers' SLA clocks on one PostgreSQL database: every due timer fires exactly once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from notifier.timers import SlaClock
from services.config import load_config
from services.db.database import Database
from services.db.models import deliveries, lead_sla, sla_timers
from services.events import utcnow

pytestmark = pytest.mark.integration
LEADS = 150


@pytest.mark.parametrize("database_url", ["postgres", "sqlite"], indirect=True)
async def test_two_clocks_fire_each_timer_once(database_url: str, db: Database) -> None:
    config = load_config(None)
    now = utcnow()
    async with db.transaction() as conn:
        await conn.execute(lead_sla.insert(), [
            {"lead_id": f"L{i}", "assignment_id": f"A{i}", "rep_id": "anna", "due_at": now, "state": "running",
             "reminders_sent": 0, "paged": False, "started_at": now - timedelta(minutes=30)} for i in range(LEADS)])
        await conn.execute(sla_timers.insert(), [
            {"lead_id": f"L{i}", "assignment_id": f"A{i}", "rep_id": "anna", "kind": kind, "fraction": fraction,
             "due_at": now, "fire_at": now - timedelta(seconds=1), "status": "pending"}
            for i in range(LEADS) for kind, fraction in (("reminder", 0.5), ("breach", 1.0))])
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
        statuses = dict((await conn.execute(select(sla_timers.c.status, func.count()).group_by(
            sla_timers.c.status))).all())
        breached = (await conn.execute(select(func.count()).where(lead_sla.c.state == "breached"))).scalar_one()
        keys = list((await conn.execute(select(deliveries.c.idempotency_key))).scalars())
    assert sum(counts) == 2 * LEADS, counts
    assert statuses == {"fired": 2 * LEADS}
    assert breached == LEADS
    assert len(keys) == len(set(keys)), "an alert was queued twice"
    print(f"two clocks fired {counts} timers; {len(keys)} alert deliveries queued")
