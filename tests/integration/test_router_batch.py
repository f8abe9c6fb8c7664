"""One router batch holding several events of one lead: the leads are read (and locked) once per batch,
so each event must still see what the events before it did to its lead."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text, update

from router.consumer import RouterHandler
from services.config import load_config
from services.db.database import Database
from services.db.models import (
    account_owners,
    assignments,
    leads,
    processed_events,
    rep_state,
    routing_cursors,
    stage_history,
)
from services.events import LEAD_REASSIGN_REQUESTED, LEAD_SCORED, Event, LeadScored, ReassignRequested, utcnow
from tests.support.leadfactory import add_lead
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


def scored(lead_id: str, n: int, total: float, domain: str | None = None) -> Event:
    now = utcnow()
    return Event.new(LEAD_SCORED, source="tests", key=lead_id, id=f"scored-{lead_id}-{n}", data=LeadScored(
        lead_id=lead_id, stage="engaged", fit=20, engagement=total - 20, total=total, scored_at=now,
        company_domain=domain,
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


async def test_leads_of_one_account_in_one_batch_go_to_its_first_owner(db: Database) -> None:
    # Account-based routing (the default): the second lead must see the owner the first one gave the
    # account, although the batch writes the account_owners row only at its end.
    now = utcnow()
    async with db.transaction() as conn:
        for i in range(4):
            await add_lead(conn, id=f"acme{i}", email=f"p{i}@acme.com", stage="engaged", fit=20, engagement=60,
                           created_at=now, company_domain="acme.com")
    await RouterHandler(db, load_config(None)).handle([scored(f"acme{i}", 1, 80, "acme.com") for i in range(4)])
    async with db.read() as conn:
        owners = set((await conn.execute(select(leads.c.owner))).scalars())
        account = (await conn.execute(select(account_owners.c.rep_id))).scalars().all()
    assert len(owners) == 1 and None not in owners
    assert account == list(owners)


async def test_a_reassignment_in_the_batch_that_assigned_the_lead_ends_that_assignment(db: Database) -> None:
    # The breach excludes every rep, whoever got the lead: it goes back to the queue, and the assignment
    # made earlier in the same batch (not yet written when the breach is handled) must be ended.
    now = utcnow()
    config = load_config(None)
    async with db.transaction() as conn:
        await add_lead(conn, id="warm", email="warm@acme.com", stage="engaged", fit=20, engagement=60,
                       created_at=now)
    everyone = [rep.id for rep in config.reps]
    breach = Event.new(LEAD_REASSIGN_REQUESTED, source="tests", key="warm", data=ReassignRequested(
        lead_id="warm", exclude_reps=everyone, reason="SLA breach", at=utcnow()).model_dump(mode="json"))
    await RouterHandler(db, config).handle([scored("warm", 1, 80), breach])
    async with db.read() as conn:
        rows = (await conn.execute(select(assignments.c.rep_id, assignments.c.ended_at)
                                   .where(assignments.c.lead_id == "warm"))).all()
        lead = (await conn.execute(select(leads.c.stage, leads.c.owner).where(leads.c.id == "warm"))).one()
    ended = [r for r in rows if r.ended_at is not None]
    still_open = [r for r in rows if r.ended_at is None]
    assert len(ended) == 1 and ended[0].rep_id in everyone
    assert len(still_open) == 1 and still_open[0].rep_id is None  # the fallback queue's row
    assert tuple(lead) == ("mql", None)


async def test_scored_events_that_cannot_move_their_lead_are_left_without_a_transaction(db: Database) -> None:
    # Decided on the event's own scores: the cold lead's row says it would qualify, but its event
    # does not; its next lead.scored (which a newer row always has) decides then.
    now = utcnow()
    async with db.transaction() as conn:
        await add_lead(conn, id="cold", email="cold@acme.com", stage="engaged", fit=20, engagement=60,
                       created_at=now)
        await add_lead(conn, id="hot", email="hot@acme.com", stage="engaged", fit=20, engagement=60, created_at=now)
    handler = RouterHandler(db, load_config(None))
    commits: list[object] = []
    db.on_commit(commits.append)
    await handler.handle([scored("cold", 1, 25), scored("cold", 2, 30)])
    assert commits == []  # no transaction at all
    await handler.handle([scored("cold", 3, 30), scored("hot", 1, 80)])
    async with db.read() as conn:
        claimed = set((await conn.execute(select(processed_events.c.event_id)
                                          .where(processed_events.c.consumer == "router"))).scalars())
        stages = dict((await conn.execute(select(leads.c.id, leads.c.stage))).all())
    assert claimed == {"scored-hot-1"}
    assert stages == {"cold": "engaged", "hot": "sql"}


async def test_a_reps_load_counts_its_live_open_leads_only(db: Database) -> None:
    # What capacity and least-loaded routing read: the open leads a rep owns, as GET /v1/reps shows
    # them. A lead merged into another is not a lead any more, whatever stage its row kept.
    async with db.transaction() as conn:
        for stage in ("sql", "contacted", "won", "recycled", "mql"):
            await add_lead(conn, stage=stage, owner="anna")
        await add_lead(conn, stage="sql", owner="anna", merged_into="someone-else")
        await add_lead(conn, stage="sql", owner="carl")
        await add_lead(conn, stage="sql", owner=None)
    handler = RouterHandler(db, load_config(None))
    async with db.read() as conn:
        states = await handler._rep_states(conn)
    assert {rep: state.open_leads for rep, state in states.items()} == {"anna": 2, "ben": 0, "carl": 1, "dana": 0}


async def test_the_routing_state_read_at_once_is_the_reps_loads_overrides_and_cursors(db: Database) -> None:
    # On PostgreSQL one statement reads the open-lead counts, the overrides and the cursors; it must
    # give what the separate reads give (SQLite runs those).
    async with db.transaction() as conn:
        await add_lead(conn, stage="sql", owner="anna")
        await add_lead(conn, stage="contacted", owner="carl")
        await add_lead(conn, stage="won", owner="carl")
        await conn.execute(rep_state.insert(), [
            {"rep_id": "ben", "available": False, "capacity": None, "updated_at": utcnow()},
            {"rep_id": "carl", "available": None, "capacity": 3, "updated_at": utcnow()}])
        await conn.execute(routing_cursors.insert(), [
            {"team": "emea", "cursor": {"last": "ben", "turns": [1, 2]}, "updated_at": utcnow()}])
    handler = RouterHandler(db, load_config(None))
    async with db.read() as conn:
        reps, cursors = await handler._routing_state(conn)
        separately = await handler._rep_states(conn)
    assert reps == separately
    assert {rep: (s.open_leads, s.available, s.capacity) for rep, s in reps.items()} == {
        "anna": (1, True, None), "ben": (0, False, None), "carl": (1, True, 3), "dana": (0, True, None)}
    assert cursors == {"emea": {"last": "ben", "turns": [1, 2]}}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_lead_that_changed_account_while_the_router_waited_for_it_goes_by_the_new_accounts_owner(
        db: Database) -> None:
    """The account's owner is read in the statement that locks the lead. When the lead changes company while
    the router waits for its lock (the scoring consumer updates it), PostgreSQL re-reads the lead row once the
    lock is free: the owner must then be the new account's, not the old one's nor none."""
    now = utcnow()
    async with db.transaction() as conn:
        await add_lead(conn, id="mover", email="p@old.com", stage="engaged", fit=20, engagement=60,
                       created_at=now, company_domain="old.com")
        await conn.execute(account_owners.insert(), [{"company_domain": "old.com", "rep_id": "carl", "since": now},
                                                     {"company_domain": "new.com", "rep_id": "dana", "since": now}])
    router = RouterHandler(db, load_config(None))

    async def router_waits_for_a_row_lock() -> bool:
        async with db.read() as conn:
            return bool((await conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted"))).scalar())

    async with db.transaction() as scoring:  # the scoring consumer, mid-batch: the lead row locked
        await scoring.execute(update(leads).where(leads.c.id == "mover").values(company_domain="new.com"))
        routing = asyncio.create_task(router.handle([scored("mover", 1, 80, "new.com")]))
        await eventually(router_waits_for_a_row_lock, 10, "the router to wait for the lead's lock")
    await routing
    async with db.read() as conn:
        reason = (await conn.execute(select(assignments.c.reason))).scalar_one()
    assert "new.com" in reason and "dana" in reason, reason
