"""JSON columns give back what was stored, whatever the database (SQLite's affinity turned "0" into 0)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from services.db.database import Database
from services.db.models import routing_cursors
from services.events import utcnow

pytestmark = pytest.mark.integration


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
