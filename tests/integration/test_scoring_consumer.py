"""The scoring consumer on both databases: identity linking and merges, redelivery, arrival order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from scoring.consumer import ScoringHandler
from scoring.rules import RuleSet
from scoring.state import LeadScoreState
from services.config import load_config
from services.db.database import Database
from services.db.models import lead_merges, leads, touchpoints
from services.events import TOUCHPOINT_RECEIVED, Event, Touchpoint

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
RULES = RuleSet.from_config(load_config(None).scoring)


def tp(event_id: str, type: str, minutes: int, **fields: Any) -> Event:
    touch = Touchpoint(event_id=event_id, type=type, occurred_at=T0 + timedelta(minutes=minutes),
                       received_at=T0 + timedelta(minutes=minutes), source="website", **fields)
    return Event.new(TOUCHPOINT_RECEIVED, source="tests", key=touch.identity_key(), id=event_id,
                     data=touch.model_dump(mode="json"))


async def live_leads(db: Database) -> list[dict[str, Any]]:
    async with db.read() as conn:
        return [dict(r) for r in (await conn.execute(
            select(leads).where(leads.c.merged_into.is_(None)).order_by(leads.c.created_at))).mappings()]


async def test_anonymous_history_joins_the_lead_and_known_leads_merge(db: Database) -> None:
    handler = ScoringHandler(db, RULES)
    await handler.handle([tp("a1", "page_view", 0, anonymous_id="anon-1", properties={"path": "/pricing"}),
                          tp("a2", "page_view", 1, anonymous_id="anon-1", properties={"path": "/blog/x"})])
    await handler.handle([tp("u1", "form_submit", 2, user_id="crm-9", properties={"form": "guide"})])
    assert len(await live_leads(db)) == 2  # an anonymous visitor and a known user, not yet linked
    # identify links the anonymous id, the user id and the email: one person.
    await handler.handle([tp("id1", "identify", 3, anonymous_id="anon-1", user_id="crm-9",
                             email="Pat@Example.org", traits={"title": "Director of Ops"})])
    live = await live_leads(db)
    assert len(live) == 1
    lead = live[0]
    assert lead["email"] == "pat@example.org" and lead["stage"] == "engaged"
    assert lead["fit"] == 20  # senior-title
    assert {i.rule for i in LeadScoreState.from_json(lead["score_state"]).engagement_items} == {
        "pricing-page", "blog-visit", "guide-download"}
    async with db.read() as conn:
        merges = (await conn.execute(select(lead_merges))).mappings().all()
        owners = set((await conn.execute(select(touchpoints.c.lead_id))).scalars())
        merged = (await conn.execute(select(leads.c.merged_into).where(leads.c.merged_into.is_not(None)))).all()
    assert len(merges) == 1 and merges[0]["winner_id"] == lead["id"]
    assert owners == {lead["id"]}, "every touchpoint (the anonymous ones too) is on the surviving lead"
    assert len(merged) == 1


async def test_a_redelivered_batch_changes_nothing(db: Database) -> None:
    handler = ScoringHandler(db, RULES)
    batch = [tp(f"e{i}", "page_view", i, email="sam@acme.io", properties={"path": "/pricing"}) for i in range(5)]
    await handler.handle(batch)
    before = await live_leads(db)
    await handler.handle(batch)
    await handler.handle(list(reversed(batch)))
    after = await live_leads(db)
    assert before == after
    async with db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(touchpoints))).scalar_one() == 5


async def test_arrival_order_does_not_change_the_score(db: Database) -> None:
    events = [tp(f"o{i}", "page_view", i * 7, email=f"{who}@acme.io", properties={"path": path})
              for i, (who, path) in enumerate([("ann", "/pricing")] * 4 + [("bo", "/blog/a")] * 5)]
    events += [tp("o-demo", "form_submit", 30, email="ann@acme.io", properties={"form": "demo"})]
    shuffled = events[:]
    random.Random(5).shuffle(shuffled)
    handler = ScoringHandler(db, RULES)
    for start in range(0, len(shuffled), 3):  # several batches, out of order
        await handler.handle(shuffled[start:start + 3])
    expected: dict[str, LeadScoreState] = {}
    for e in events:  # the pure fold, in order
        email = e.data["email"]
        expected[email] = RULES.apply(expected.get(email, LeadScoreState.empty()), e.data)
    for lead in await live_leads(db):
        state = LeadScoreState.from_json(lead["score_state"])
        assert state == expected[lead["email"]]
