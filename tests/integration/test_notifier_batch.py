"""One notifier batch holding several assignments of one lead: the batch writes what the events one by
one would have left (the newest clock runs, every assignment is pushed, a fallback stops the clock)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from notifier.consumer import NotifierHandler
from services.config import HandoffConfig, load_config
from services.db.database import Database
from services.db.models import deliveries, lead_sla, sla_timers
from services.events import LEAD_ASSIGNED, LEAD_FEEDBACK, Event, LeadAssigned, LeadFeedback, utcnow

pytestmark = pytest.mark.integration


def config() -> HandoffConfig:
    data = load_config(None).model_dump(mode="json")
    data["crm"] = {"kind": "webhook", "url": "http://127.0.0.1:9/leads", "secret_env": "CRM_SIGNING_SECRET"}
    return HandoffConfig.model_validate(data)


def assigned(lead: str, assignment: str, rep: str | None) -> Event:
    return Event.new(LEAD_ASSIGNED, source="tests", key=lead, data=LeadAssigned(
        lead_id=lead, assignment_id=assignment, rep_id=rep, team="default", reason="tests",
        assigned_at=utcnow()).model_dump(mode="json"))


def contacted(lead: str) -> Event:
    return Event.new(LEAD_FEEDBACK, source="tests", key=lead, data=LeadFeedback(
        lead_id=lead, type="contacted", at=utcnow()).model_dump(mode="json"))


async def state(db: Database) -> dict[str, Any]:
    async with db.read() as conn:
        timers = (await conn.execute(select(sla_timers.c.lead_id, sla_timers.c.assignment_id,
                                            sla_timers.c.status))).all()
        sla = dict((await conn.execute(select(lead_sla.c.lead_id, lead_sla.c.assignment_id))).all())
        pushes = (await conn.execute(select(deliveries.c.idempotency_key).where(deliveries.c.target == "crm")
                                     .order_by(deliveries.c.id))).scalars().all()
    pending = {(t.lead_id, t.assignment_id) for t in timers if t.status == "pending"}
    return {"pending": pending, "sla": sla, "pushes": list(pushes)}


async def test_the_newest_assignment_of_a_lead_in_a_batch_owns_its_clock(db: Database) -> None:
    await NotifierHandler(db, config()).handle([
        assigned("a", "a1", "anna"), assigned("b", "b1", "ben"), assigned("a", "a2", "carl"),
        assigned("c", "c1", "anna"), assigned("c", "c2", None),  # reassigned, then nobody could take it
    ])
    seen = await state(db)
    assert seen["pending"] == {("a", "a2"), ("b", "b1")}
    assert seen["sla"] == {"a": "a2", "b": "b1", "c": "c1"}
    assert seen["pushes"] == ["a:a1", "b:b1", "a:a2", "c:c1"]


async def test_an_earlier_clock_is_cancelled_and_feedback_in_the_same_batch_stops_the_new_one(
    db: Database,
) -> None:
    handler = NotifierHandler(db, config())
    await handler.handle([assigned("a", "a1", "anna")])
    assert (await state(db))["pending"] == {("a", "a1")}
    await handler.handle([assigned("a", "a2", "ben"), assigned("d", "d1", "anna"), contacted("a")])
    assert (await state(db))["pending"] == {("d", "d1")}
