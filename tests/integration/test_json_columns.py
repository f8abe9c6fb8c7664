"""JSON columns give back what was stored, whatever the database (SQLite's affinity turned "0" into 0)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from services.db.database import Database
from services.db.models import routing_cursors
from services.events import utcnow

pytestmark = pytest.mark.integration


async def stored(db: Database, key: Any, column: Any) -> dict[Any, Any]:
    """``{key: column}`` of every row of the table those columns belong to."""
    async with db.read() as conn:
        return dict((await conn.execute(select(key, column))).all())


@pytest.mark.parametrize("value", [0, 3, 1.5, "ben", None, True, [1, 2], {"anna": 1.5, "ben": -0.5}])
async def test_a_json_value_round_trips(db: Database, value: Any) -> None:
    async with db.transaction() as conn:
        await conn.execute(routing_cursors.insert().values(team="emea", cursor=value, updated_at=utcnow()))
    async with db.read() as conn:
        got = (await conn.execute(select(routing_cursors.c.cursor))).scalar_one()
    assert got == value and type(got) is type(value)


async def test_keys_that_are_not_strings_are_stored_as_strings(db: Database) -> None:
    # Through a Core insert (the engine's serializer) and through the arrays of ``insert_rows``.
    from services.db.arrays import insert_rows
    from services.db.models import dead_letters

    async with db.transaction() as conn:
        await conn.execute(routing_cursors.insert().values(team="emea", cursor={1: "a", "b": {2: True}},
                                                           updated_at=utcnow()))
        await insert_rows(conn, dead_letters, [{"origin": "test", "error": "e", "payload": {7: [1]},
                                                "created_at": utcnow()}])
    async with db.read() as conn:
        cursor = (await conn.execute(select(routing_cursors.c.cursor))).scalar_one()
        payload = (await conn.execute(select(dead_letters.c.payload))).scalar_one()
    assert cursor == {"1": "a", "b": {"2": True}}
    assert payload == {"7": [1]}


VALUES = [{"anna": [1, {"b": None}]}, None, 0, "text with 'quotes' and \\ and \u00e9", [], {}, True, -2.5, [None]]


async def test_rows_written_as_arrays_keep_each_json_value_with_its_row(db: Database) -> None:
    # ``insert_rows`` and ``update_rows`` send a JSON column as one document on PostgreSQL: each value
    # must land in its own row, in order, and None must be SQL NULL there, as it was when the values
    # travelled as a jsonb[] (SQLite's plain insert stores the JSON null, read back as None all the same).
    from sqlalchemy import func

    from services.db.arrays import insert_rows, update_rows

    now = utcnow()
    teams = [f"team-{i}" for i in range(len(VALUES))]
    async with db.transaction() as conn:
        await insert_rows(conn, routing_cursors, [
            {"team": team, "cursor": value, "updated_at": now} for team, value in zip(teams, VALUES, strict=True)])
    assert await stored(db, routing_cursors.c.team, routing_cursors.c.cursor) == dict(zip(teams, VALUES, strict=True))
    async with db.read() as conn:
        nulls = (await conn.execute(select(func.count()).select_from(routing_cursors)
                                    .where(routing_cursors.c.cursor.is_(None)))).scalar_one()
    assert nulls == (1 if db.is_postgres else 0)
    moved = VALUES[1:] + VALUES[:1]
    async with db.transaction() as conn:
        await update_rows(conn, routing_cursors, "team", [
            {"team": team, "cursor": value} for team, value in zip(teams, moved, strict=True)])
    assert await stored(db, routing_cursors.c.team, routing_cursors.c.cursor) == dict(zip(teams, moved, strict=True))


async def test_combined_statements_write_each_table_with_its_own_values(db: Database) -> None:
    # Combined into one PostgreSQL statement, two statements' parameters of the same name (``updated_at``
    # here, ``source`` for the scoring consumer's leads and outbox) must each reach their own table.
    from services.db.arrays import combined_statements, insert_statement, update_statement

    then, now = utcnow() - timedelta(hours=1), utcnow()
    async with db.transaction() as conn:
        await conn.execute(*insert_statement(conn, routing_cursors, [
            {"team": t, "cursor": {"at": 0}, "updated_at": then} for t in ("a", "b")]))
    async with db.transaction() as conn:
        writes = combined_statements(conn, [
            update_statement(conn, routing_cursors, "team", [{"team": "a", "cursor": {"at": 1}, "updated_at": now}]),
            insert_statement(conn, routing_cursors, [{"team": "c", "cursor": [2], "updated_at": then}]),
        ])
        for statement, parameters in writes:
            await conn.execute(statement, parameters)
    assert len(writes) == (1 if db.is_postgres else 2)
    async with db.read() as conn:
        rows = {row.team: (row.cursor, row.updated_at) for row in await conn.execute(select(routing_cursors))}
    assert rows == {"a": ({"at": 1}, now), "b": ({"at": 0}, then), "c": ([2], then)}


async def test_a_combined_statement_returns_the_rows_of_the_part_asked_for(db: Database) -> None:
    from sqlalchemy import text

    from services.db.arrays import combined_statements, insert_statement
    from services.idempotency import claim_statement, claimed_ids

    async with db.transaction() as conn:
        claim = claim_statement(conn, "test", ["e1", "e2"])
        writes = combined_statements(conn, [claim, insert_statement(conn, routing_cursors, [
            {"team": "a", "cursor": None, "updated_at": utcnow()}])], result_of=0)
        results = [await conn.execute(statement, parameters) for statement, parameters in writes]
        assert claimed_ids(results[0]) == {"e1", "e2"}
        again = combined_statements(conn, [claim_statement(conn, "test", ["e2", "e3"]), insert_statement(
            conn, routing_cursors, [{"team": "b", "cursor": None, "updated_at": utcnow()}])], result_of=0)
        results = [await conn.execute(statement, parameters) for statement, parameters in again]
        assert claimed_ids(results[0]) == {"e3"}  # e2 was claimed before: not returned
        teams = set((await conn.execute(select(routing_cursors.c.team))).scalars())
    assert teams == {"a", "b"}
    if db.is_postgres:  # a statement with a WITH of its own cannot be a part of another
        with pytest.raises(ValueError, match="cannot combine"):
            combined_statements(conn, [(text("WITH x AS (SELECT 1) SELECT * FROM x"), {}), claim])


TEXTS = ["plain", "", None, "a\x1fb", "\x1e", "quote ' and \" and \\ and \u00e9", "null", "NULL", "{x,y}"]


@pytest.mark.parametrize("campaigns", [
    TEXTS,                                   # a value holds a separator: the column goes as an array
    [t for t in TEXTS if t is None or ("\x1f" not in t and "\x1e" not in t)],  # joined into one text
    [""], [None], ["only"],                  # one row: an empty text must stay one empty string
    ["", ""], [None, None, ""],
    ["\x1e", None, "x"],                      # a value that is the NULL mark: not joined, not NULL
])
async def test_text_columns_keep_each_value_with_its_row(db: Database, campaigns: list[str | None]) -> None:
    # On PostgreSQL a text column's values travel as one text split on the server (services.db.arrays):
    # empty strings, NULLs, the separators themselves and quotes must all land in their own rows, on
    # insert and on update.
    from services.db.arrays import insert_rows, update_rows
    from services.db.models import touchpoints

    now = utcnow()
    ids = [f"e{i}" for i in range(len(campaigns))]
    async with db.transaction() as conn:
        await insert_rows(conn, touchpoints, [
            {"event_id": event_id, "lead_id": "l", "type": "page", "occurred_at": now, "source": "web",
             "campaign": campaign, "payload": {}} for event_id, campaign in zip(ids, campaigns, strict=True)])
    assert await stored(db, touchpoints.c.event_id, touchpoints.c.campaign) == dict(zip(ids, campaigns, strict=True))
    moved = campaigns[1:] + campaigns[:1]
    async with db.transaction() as conn:
        await update_rows(conn, touchpoints, "event_id", [
            {"event_id": event_id, "campaign": campaign} for event_id, campaign in zip(ids, moved, strict=True)])
    assert await stored(db, touchpoints.c.event_id, touchpoints.c.campaign) == dict(zip(ids, moved, strict=True))


@pytest.mark.parametrize("shape", ["one time", "times", "with nulls", "one row"])
async def test_time_columns_keep_each_value_with_its_row(db: Database, shape: str) -> None:
    # On PostgreSQL a time column whose values are all one time travels as that time and a count
    # (services.db.arrays); any other column as an array: each row gets its own time either way.
    from services.db.arrays import insert_rows, update_rows
    from services.db.models import sla_timers

    now = utcnow()
    shapes: dict[str, list[Any]] = {"one time": [now] * 4, "times": [now - timedelta(seconds=i) for i in range(4)],
                                     "with nulls": [now, None, now, now], "one row": [now]}
    times = shapes[shape]
    ids = [f"l{i}" for i in range(len(times))]
    async with db.transaction() as conn:
        await insert_rows(conn, sla_timers, [
            {"id": i + 1, "lead_id": lead_id, "assignment_id": "a", "kind": "breach", "due_at": now,
             "fire_at": now, "status": "fired", "fired_at": at}
            for i, (lead_id, at) in enumerate(zip(ids, times, strict=True))])
    assert await stored(db, sla_timers.c.lead_id, sla_timers.c.fired_at) == dict(zip(ids, times, strict=True))
    later = [None if at is None else at + timedelta(minutes=5) for at in times[::-1]]
    async with db.transaction() as conn:
        await update_rows(conn, sla_timers, "id", [
            {"id": i + 1, "fired_at": at} for i, at in enumerate(later)])
    assert await stored(db, sla_timers.c.lead_id, sla_timers.c.fired_at) == dict(zip(ids, later, strict=True))
