"""Many lead documents in one set of queries (the notifier's batch of CRM pushes): each the same as
the document read alone, merges followed both ways, each timeline limited on its own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ClauseElement

from services.db.database import Database
from services.lead_documents import HAS_MERGED, _queries, load_lead_document, load_lead_documents
from tests.support.leadfactory import T0, add_assignment, add_history, add_identity, add_lead, add_touchpoint

pytestmark = pytest.mark.integration


async def test_a_batch_of_documents_equals_the_documents_read_one_by_one(db: Database) -> None:
    async with db.transaction() as conn:
        winner = await add_lead(conn, id="w", email="jane@acme.com", stage="sql", owner="anna")
        loser = await add_lead(conn, id="l", stage="anonymous", merged_into=winner)
        older = await add_lead(conn, id="o", stage="anonymous", merged_into=loser)  # a chain: o -> l -> w
        other = await add_lead(conn, id="x", email="max@beta.io", stage="engaged")
        await add_identity(conn, loser, "anon", "a-1")
        await add_identity(conn, older, "anon", "a-0")
        for i, lead in enumerate([older, loser, winner, winner, other, other, other]):
            await add_touchpoint(conn, lead, event_id=f"tp-{i}", type="page_view", occurred_at=T0 + timedelta(hours=i))
        await add_history(conn, winner, None, "known", T0, "first touch")
        await add_history(conn, winner, "known", "sql", T0 + timedelta(hours=3), "assigned")
        await add_assignment(conn, winner, id="asg-1", rep_id="anna", team="emea", assigned_at=T0)
    ids = [older, other, "nope", winner, loser]
    async with db.read() as conn:
        batch = await load_lead_documents(conn, ids, timeline_limit=3)
        alone = {lead_id: await load_lead_document(conn, lead_id, timeline_limit=3) for lead_id in ids}
    assert batch == alone
    assert batch["nope"] is None
    doc = batch[older]
    assert doc is not None and doc == batch[loser] == batch[winner]
    assert doc["id"] == winner and sorted(doc["merged_from"]) == [loser, older]
    assert sorted(doc["anonymous_ids"]) == ["a-0", "a-1"]
    # The newest 3 of the 4 touchpoints of the merged leads, oldest first; the total counts all 4.
    assert [t["event_id"] for t in doc["touchpoints"]] == ["tp-1", "tp-2", "tp-3"]
    assert doc["touchpoints_total"] == 4
    assert [h["to"] for h in doc["stage_history"]] == ["known", "sql"]
    assert doc["assignment"]["assignment_id"] == "asg-1"
    other_doc = batch[other]
    assert other_doc is not None and [t["event_id"] for t in other_doc["touchpoints"]] == ["tp-4", "tp-5", "tp-6"]
    assert other_doc["touchpoints_total"] == 3 and other_doc["stage_history"] == []


async def plan_without_seq_scans(conn: AsyncConnection, query: ClauseElement) -> str:
    """``query``'s plan (its parameters inlined) as text: PostgreSQL's ``EXPLAIN`` with sequential scans
    ruled out as far as the planner allows, SQLite's ``EXPLAIN QUERY PLAN``."""
    sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True, "render_postcompile": True}))
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        return "\n".join(row[0] for row in await conn.exec_driver_sql(f"EXPLAIN {sql}"))
    return "\n".join(str(row[-1]) for row in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))


async def test_merged_away_leads_are_found_through_an_index_not_a_table_scan(db: Database) -> None:
    """Every CRM push reads its lead's merged-away leads; over the whole leads table that read grew with
    every lead ever scored. With sequential scans ruled out as far as the planner allows, the plan must
    use an index (without one, PostgreSQL still scans and SQLite reports ``SCAN leads``)."""
    async with db.transaction() as conn:
        winner = await add_lead(conn, id="w", stage="sql")
        for i in range(20):
            await add_lead(conn, id=f"l{i}", stage="anonymous", merged_into=winner if i % 5 == 0 else None)
    query = _queries().merged_into
    async with db.read() as conn:
        plan = await plan_without_seq_scans(conn, query.params(ids=[winner]))
        if conn.dialect.name == "postgresql":
            assert "Index" in plan and "Seq Scan" not in plan, plan
        else:
            assert "INDEX ix_leads_merged_into" in plan, plan  # SEARCH leads USING (COVERING) INDEX ...
        rows = (await conn.execute(query, {"ids": [winner]})).all()
    assert sorted(lead_id for lead_id, _ in rows) == ["l0", "l10", "l15", "l5"]


async def test_whether_leads_were_merged_into_a_lead_is_read_with_it_through_an_index(db: Database) -> None:
    """The lead rows say whether any lead was merged into them, so that a push of a lead nobody was
    merged into (most of them) skips the walk through merged leads; the check must not scan the table."""
    async with db.transaction() as conn:
        winner = await add_lead(conn, id="w", stage="sql")
        alone = await add_lead(conn, id="a", stage="sql")
        for i in range(20):
            await add_lead(conn, id=f"l{i}", stage="anonymous", merged_into=winner if i % 5 == 0 else None)
    query = _queries().leads
    async with db.read() as conn:
        plan = await plan_without_seq_scans(conn, query.params(ids=[winner, alone]))
        if conn.dialect.name == "postgresql":
            assert "ix_leads_merged_into" in plan and "Seq Scan" not in plan, plan
        else:
            assert "INDEX ix_leads_merged_into" in plan, plan
        rows = {row["id"]: row[HAS_MERGED] for row in (await conn.execute(query, {"ids": [winner, alone]})).mappings()}
    assert rows == {winner: True, alone: False}
