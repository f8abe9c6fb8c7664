"""Four routers on PostgreSQL, 2,000 qualifying leads, every event delivered to every router (redelivery
and races at once): each lead is assigned exactly once, and no rep goes over capacity."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from sqlalchemy import func, select

from router.consumer import RouterHandler
from services.config import HandoffConfig, load_config
from services.db.database import Database
from services.db.models import assignments, leads
from services.events import LEAD_SCORED, Event, LeadScored, utcnow
from tests.support.leadfactory import add_lead

pytestmark = pytest.mark.integration
N = 2000
CAPACITY = 450  # 4 reps x 450 = 1,800: the last 200 leads must wait in the fallback queue


def config() -> HandoffConfig:
    data = load_config(None).model_dump(mode="json")
    data["routing"] = {"account_based": False, "rules": [{"team": "all"}]}
    data["teams"] = {"all": {"strategy": "round_robin", "reps": ["anna", "ben", "carl", "dana"]}}
    for rep in data["reps"]:
        rep["capacity"] = CAPACITY
    return HandoffConfig.model_validate(data)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_four_routers_assign_each_lead_once_within_capacity(database_url: str, db: Database) -> None:
    now = utcnow()
    async with db.transaction() as conn:
        for i in range(N):
            await add_lead(conn, id=f"lead-{i:05d}", email=f"buyer{i}@co{i}.com", stage="engaged", fit=20,
                           engagement=60, created_at=now)
    events = [Event.new(LEAD_SCORED, source="tests", key=f"lead-{i:05d}", id=f"scored-{i}", data=LeadScored(
        lead_id=f"lead-{i:05d}", stage="engaged", fit=20, engagement=60, total=80, scored_at=now,
    ).model_dump(mode="json")) for i in range(N)]
    cfg = config()
    databases = [Database(database_url, pool_size=4) for _ in range(4)]
    try:
        async def router(k: int) -> None:
            handler = RouterHandler(databases[k], cfg)
            mine = events[:]
            random.Random(k).shuffle(mine)
            for start in range(0, N, 100):
                await handler.handle(mine[start:start + 100])

        await asyncio.gather(*(router(k) for k in range(4)))
    finally:
        for d in databases:
            await d.dispose()
    async with db.read() as conn:
        per_lead: Counter[str] = Counter(dict((await conn.execute(
            select(assignments.c.lead_id, func.count()).group_by(assignments.c.lead_id))).all()))
        owners: Counter[str] = Counter(dict((await conn.execute(select(leads.c.owner, func.count()).where(
            leads.c.owner.is_not(None)).group_by(leads.c.owner))).all()))
        sql = (await conn.execute(select(func.count()).where(leads.c.stage == "sql"))).scalar_one()
        waiting = (await conn.execute(select(func.count()).where(leads.c.stage == "mql"))).scalar_one()
    assert len(per_lead) == N and set(per_lead.values()) == {1}, "a lead was assigned twice (or never)"
    assert sum(owners.values()) == sql == 4 * CAPACITY
    assert max(owners.values()) <= CAPACITY, f"over capacity: {owners}"
    assert waiting == N - 4 * CAPACITY  # the rest is in the fallback queue, not over-assigned
    print(f"4 routers, {N} leads: assigned {sql}, fallback {waiting}, per rep {dict(owners)}")
