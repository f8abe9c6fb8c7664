"""One router batch holding several events of one lead: the leads are read (and locked) once per batch,
so each event must still see what the events before it did to its lead."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from router.consumer import RouterHandler
from services.config import load_config
from services.db.database import Database
from services.db.models import assignments, leads, stage_history
from services.events import LEAD_SCORED, Event, LeadScored, utcnow
from tests.support.leadfactory import add_lead

pytestmark = pytest.mark.integration


def scored(lead_id: str, n: int, total: float) -> Event:
    now = utcnow()
    return Event.new(LEAD_SCORED, source="tests", key=lead_id, id=f"scored-{lead_id}-{n}", data=LeadScored(
        lead_id=lead_id, stage="engaged", fit=20, engagement=total - 20, total=total, scored_at=now,
    ).model_dump(mode="json"))


async def test_a_lead_scored_twice_in_one_batch_is_assigned_once(db: Database) -> None:
    now = utcnow()
    async with db.transaction() as conn:
        await add_lead(conn, id="hot", email="hot@acme.com", stage="engaged", fit=20, engagement=60, created_at=now)
        await add_lead(conn, id="cold", email="cold@acme.com", stage="engaged", fit=0, engagement=5, created_at=now)
    batch = [scored("hot", 1, 80), scored("cold", 1, 5), scored("missing", 1, 90), scored("hot", 2, 85)]
    await RouterHandler(db, load_config(None)).handle(batch)
    async with db.read() as conn:
        owned = (await conn.execute(select(assignments.c.lead_id, assignments.c.rep_id))).all()
        stages = dict((await conn.execute(select(leads.c.id, leads.c.stage))).all())
        moves = (await conn.execute(select(stage_history.c.lead_id, stage_history.c.from_stage,
                                           stage_history.c.to_stage).order_by(stage_history.c.id))).all()
    assert [lead for lead, _ in owned] == ["hot"] and owned[0][1] is not None
    assert stages == {"hot": "sql", "cold": "engaged"}
    assert [tuple(m) for m in moves if m[0] == "hot"] == [("hot", "engaged", "mql"), ("hot", "mql", "sql")]
