"""The scoring consumer on both databases: identity linking and merges, redelivery, arrival order."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from scoring.bulk import lock_leads
from scoring.consumer import IdentityRace, ScoringHandler, _Batch
from scoring.rescore import rescore
from scoring.rules import RuleSet
from scoring.state import LeadScoreState
from scoring.touchpoints import touchpoint_dicts
from services.config import load_config
from services.db.database import Database
from services.db.models import lead_merges, leads, outbox, stage_history, touchpoints
from services.events import LEAD_SCORED, LEAD_STAGE_CHANGED, TOUCHPOINT_RECEIVED, Event, LeadScored, Touchpoint
from tests.support.stage_chain import assert_chain, stored

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


async def test_a_batch_partly_seen_before_applies_only_its_new_events(db: Database) -> None:
    # The runner redelivers a batch whose first part was handled (a rebalance, a restart): the claim
    # travels with the writes, so the batch is applied again with its new events only. Lead A's
    # event was seen: its row and its events stay as they were; lead B's is new.
    handler = ScoringHandler(db, RULES)
    seen = tp("s1", "page_view", 0, email="ash@acme.io", properties={"path": "/pricing"})
    await handler.handle([seen])
    (lead_a,) = await live_leads(db)
    new = tp("s2", "form_submit", 1, email="bea@acme.io", properties={"form": "demo"})
    await handler.handle([seen, new])
    leads_now = {lead["email"]: lead for lead in await live_leads(db)}
    assert leads_now["ash@acme.io"] == lead_a, "a seen event must not touch its lead again"
    assert leads_now["bea@acme.io"]["stage"] == "engaged"
    async with db.read() as conn:
        scored = (await conn.execute(select(outbox.c.key).where(outbox.c.type == LEAD_SCORED))).scalars().all()
        stored_tps = (await conn.execute(select(func.count()).select_from(touchpoints))).scalar_one()
    assert sorted(scored) == sorted([lead_a["id"], leads_now["bea@acme.io"]["id"]]), "one lead.scored each"
    assert stored_tps == 2


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


async def test_the_consumers_own_state_is_recognised_without_parsing_it(db: Database, monkeypatch: Any) -> None:
    # The stored state's rev is read from the start of its JSON text (scoring.bulk.lock_leads): the next
    # batch of the same lead uses the remembered state and parses nothing.
    import scoring.consumer as consumer

    handler = ScoringHandler(db, RULES)
    await handler.handle([tp("m1", "page_view", 0, email="max@acme.io", properties={"path": "/pricing"})])
    (lead,) = await live_leads(db)
    assert next(iter(lead["score_state"])) == "rev"  # written first, so that it is found without parsing
    parsed: list[object] = []
    monkeypatch.setattr(consumer.LeadScoreState, "from_json", staticmethod(lambda raw: parsed.append(raw)))
    await handler.handle([tp("m2", "page_view", 1, email="max@acme.io", properties={"path": "/blog/a"})])
    assert parsed == []
    (lead,) = await live_leads(db)
    async with db.read() as conn:
        (row,) = await lock_leads(conn, [lead["id"]])
    assert row["rev"] == lead["score_state"]["rev"]


async def test_a_state_written_by_someone_else_is_read_not_the_remembered_one(db: Database) -> None:
    # The consumer remembers the states it stored; another writer (handoff rescore, an operator's fix)
    # stores its own, which the next batch must fold into, not the remembered one.
    handler = ScoringHandler(db, RULES)
    await handler.handle([tp("r1", "page_view", 0, email="kim@acme.io", properties={"path": "/pricing"})])
    (lead,) = await live_leads(db)
    assert lead["score_state"]["rev"]  # the revision the consumer remembers it under
    other = RULES.apply(LeadScoreState.empty(), tp("x1", "form_submit", 1, email="kim@acme.io",
                                                   properties={"form": "demo"}).data)
    async with db.transaction() as conn:
        await conn.execute(leads.update().where(leads.c.id == lead["id"]).values(score_state=other.to_json()))
    later = tp("r2", "page_view", 2, email="kim@acme.io", properties={"path": "/blog/a"})
    await handler.handle([later])
    (lead,) = await live_leads(db)
    assert LeadScoreState.from_json(lead["score_state"]) == RULES.apply(other, later.data)
    assert len(handler.states) == 1


async def test_a_rolled_back_batch_leaves_nothing_remembered_that_the_database_lacks(db: Database) -> None:
    handler = ScoringHandler(db, RULES)
    await handler.handle([tp("b1", "page_view", 0, email="lee@acme.io", properties={"path": "/pricing"})])
    failing = tp("b2", "form_submit", 1, email="lee@acme.io", properties={"form": "demo"})
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:  # the batch's writes happen, then the transaction fails
            await _Batch(conn, RULES, handler.states).apply(touchpoint_dicts([failing.data]))
            raise RuntimeError("the commit failed")
    await handler.handle([failing])  # redelivered: applied once, on the committed state
    (lead,) = await live_leads(db)
    expected = RULES.apply_many(LeadScoreState.empty(), [
        tp("b1", "page_view", 0, email="lee@acme.io", properties={"path": "/pricing"}).data, failing.data])
    assert LeadScoreState.from_json(lead["score_state"]) == expected


async def test_events_queued_are_the_models_as_json(db: Database) -> None:
    handler = ScoringHandler(db, RULES)
    await handler.handle([tp("q1", "identify", 0, anonymous_id="anon-q", email="Quinn@Acme.io",
                             traits={"title": "VP Sales", "employees": 120}),
                          tp("q2", "form_submit", 1, email="quinn@acme.io", properties={"form": "demo"})])
    async with db.read() as conn:
        rows = (await conn.execute(select(outbox).order_by(outbox.c.id))).mappings().all()
    assert [r["type"] for r in rows] == [LEAD_STAGE_CHANGED, LEAD_SCORED]  # in the order they were queued
    scored = rows[1]["data"]
    assert LeadScored.model_validate(scored).model_dump(mode="json") == scored
    assert scored["fit"] == 30 and scored["rules_hit"] == ["demo-request"] and scored["stage"] == "engaged"
    for row in rows:
        assert str(uuid.UUID(row["event_id"])) == row["event_id"] and uuid.UUID(row["event_id"]).version == 4


async def test_rescore_rewrites_what_the_consumer_stored_and_the_consumer_goes_on_from_it(db: Database) -> None:
    config = load_config(None)
    handler = ScoringHandler(db, RULES)
    await handler.handle([tp("s1", "page_view", 0, email="sol@acme.io", properties={"path": "/pricing"})])
    doubled = [r.model_copy(update={"points": r.points * 2}) for r in config.scoring.engagement]
    stricter = config.model_copy(update={"scoring": config.scoring.model_copy(update={"engagement": doubled})})
    report = await rescore(db, config, stricter, dry_run=False, progress=False)
    assert report.changed == 1
    (lead,) = await live_leads(db)
    assert "rev" not in lead["score_state"]  # rescore's own state: the consumer must read it
    await handler.handle([tp("s2", "page_view", 1, email="sol@acme.io", properties={"path": "/blog/a"})])
    (lead,) = await live_leads(db)
    assert {i.event_id for i in LeadScoreState.from_json(lead["score_state"]).engagement_items} == {"s1", "s2"}


async def test_stage_changed_at_follows_the_leads_moves(db: Database) -> None:
    handler = ScoringHandler(db, RULES)
    await handler.handle([tp("v1", "page_view", 0, anonymous_id="anon-7", properties={"path": "/about"})])
    await handler.handle([tp("v2", "identify", 1, anonymous_id="anon-7", email="kim@acme.io")])
    await handler.handle([tp("v3", "page_view", 2, email="kim@acme.io", properties={"path": "/about"})])
    async with db.read() as conn:
        history = (await conn.execute(select(stage_history.c.to_stage, stage_history.c.at)
                                      .order_by(stage_history.c.id))).all()
    lead = (await live_leads(db))[0]
    assert [stage for stage, _ in history] == ["anonymous", "known"] and lead["stage"] == "known"
    assert lead["stage_changed_at"] == history[-1][1] > history[0][1]
    assert lead["updated_at"] > lead["stage_changed_at"]  # a later touchpoint that did not move the lead


async def test_the_stage_chain_of_every_lead_is_right_after_scoring(db: Database) -> None:
    # A new lead's first row carries its chain itself; rows of known leads get theirs refreshed.
    handler = ScoringHandler(db, RULES)
    await handler.handle([tp("c1", "page_view", 0, anonymous_id="anon-c", properties={"path": "/blog/x"}),
                          tp("c2", "identify", 1, user_id="crm-c", email="cy@acme.io")])
    await handler.handle([tp("c3", "identify", 2, anonymous_id="anon-c", email="cy@acme.io"),
                          tp("c4", "page_view", 3, email="new@acme.io", properties={"path": "/pricing"}),
                          tp("c5", "page_view", 4, anonymous_id="anon-d")])
    await handler.handle([tp("c6", "page_view", 5, email="cy@acme.io", properties={"path": "/pricing"}),
                          tp("c7", "identify", 6, anonymous_id="anon-d", user_id="crm-d")])
    async with db.read() as conn:
        rows = await stored(conn)
    assert {row.to_stage for row in rows} >= {"anonymous", "known", "engaged"}
    assert sum(1 for row in rows if row.from_stage is not None) >= 2  # moves of leads stored earlier
    assert_chain(rows)


async def test_moves_of_a_batch_with_several_slices_get_their_chain_whichever_slice_refreshes_it(db: Database) -> None:
    # 120 leads in one batch: several fold slices, the new leads in the last one. The moves of the
    # earlier slices' leads are refreshed in the last slice's statement (PostgreSQL), or after it.
    handler = ScoringHandler(db, RULES)
    await handler.handle([tp(f"k{i}", "identify", 0, email=f"k{i}@acme.io") for i in range(80)])  # known
    await handler.handle([tp(f"p{i}", "page_view", 5, email=f"k{i}@acme.io", properties={"path": "/pricing"})
                          for i in range(80)] + [tp(f"n{i}", "identify", 6, email=f"n{i}@acme.io") for i in range(40)])
    async with db.read() as conn:
        rows = await stored(conn)
    moved = [row for row in rows if row.from_stage == "known" and row.to_stage == "engaged"]
    assert len(moved) == 80 and sum(1 for row in rows if row.from_stage is None) == 120
    assert_chain(rows)  # the first moves of the 80 end where the engaged ones begin, tops as reached


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_consumers_creating_the_same_identities_end_with_one_lead_per_buyer(db: Database) -> None:
    # Each batch creates the same identities, in opposite orders. The later consumer waits for the
    # first one's links, finds the identities taken by other leads and fails with IdentityRace; retried
    # (as the runner does), it joins those leads: one lead per buyer, every touchpoint stored once. (The
    # links go in (kind, value) order, so two such inserts cannot deadlock; this run does not show a
    # deadlock either way: the two inserts rarely overlap.)
    one, two = ScoringHandler(db, RULES), ScoringHandler(db, RULES)
    emails = [f"buyer{i:03d}@acme.io" for i in range(200)]  # enough for the two inserts to overlap
    first = [tp(f"r1-{i}", "page_view", 0, email=email) for i, email in enumerate(emails)]
    second = [tp(f"r2-{i}", "page_view", 1, email=email) for i, email in enumerate(reversed(emails))]
    outcomes = await asyncio.gather(one.handle(first), two.handle(second), return_exceptions=True)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(f, IdentityRace) for f in failures), failures
    for handler, batch, outcome in ((one, first, outcomes[0]), (two, second, outcomes[1])):
        if isinstance(outcome, IdentityRace):
            await handler.handle(batch)  # redelivered, as the runner does
    live = await live_leads(db)
    assert sorted(lead["email"] for lead in live) == emails
    async with db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(touchpoints))).scalar_one() == 400
