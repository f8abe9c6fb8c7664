"""The driver-level bulk statements of ``services.db.bulk`` on SQLite and PostgreSQL: they must store
exactly what Core would, and tell new keys from existing ones across chunk boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import insert, select

from services.db import bulk
from services.db.database import Database
from services.db.models import bus_log, ingest_events

COLUMNS = ("event_id", "source", "received_at")
WHEN = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)


async def test_insert_new_returns_only_the_new_keys_across_chunks(db: Database, monkeypatch: Any) -> None:
    monkeypatch.setattr(bulk, "MAX_PARAMS", 30)  # small statements: the rows span several
    many = 50
    async with db.transaction() as conn:
        await conn.execute(insert(ingest_events), [{"event_id": "old-1", "source": "w", "received_at": WHEN},
                                                   {"event_id": "old-2", "source": "w", "received_at": WHEN}])
    rows = [(f"new-{i}", "website", WHEN) for i in range(many)] + [("old-1", "website", WHEN)]
    async with db.transaction() as conn:
        new = await bulk.insert_new(conn, ingest_events, COLUMNS, rows)
        assert await bulk.insert_new(conn, ingest_events, COLUMNS, []) == []
    assert sorted(new) == sorted(f"new-{i}" for i in range(many))
    async with db.read() as conn:
        found = await bulk.existing(conn, ingest_events.c.event_id, ["old-1", "old-2", "new-0", "missing",
                                                                     *(f"new-{i}" for i in range(many))])
        stored = (await conn.execute(select(ingest_events).where(ingest_events.c.event_id == "new-7"))).one()
        assert await bulk.existing(conn, ingest_events.c.event_id, []) == set()
    assert found == {"old-1", "old-2", *(f"new-{i}" for i in range(many))}
    assert stored.source == "website" and stored.received_at == WHEN  # read back through Core: same value


async def test_insert_new_stores_texts_that_hold_the_join_separators_and_times_as_given(db: Database) -> None:
    # On PostgreSQL a text column travels as one joined text unless a value holds the unit or record
    # separator (services.db.arrays); both forms, in one statement, must store the values as given.
    odd = ["a\x1fb", "c\x1ed", "e"]  # event ids that cannot be joined; their sources can
    plain = [f"p-{i}" for i in range(3)]
    # (Times: distinct in the first three rows, one time in the others, which may travel as one value.)
    rows = [(event_id, "web", WHEN + timedelta(seconds=i)) for i, event_id in enumerate(odd)] + \
        [(event_id, f"s\x1f{i}", WHEN) for i, event_id in enumerate(plain)]
    async with db.transaction() as conn:
        first = await bulk.insert_new(conn, ingest_events, COLUMNS, rows[:3])
        second = await bulk.insert_new(conn, ingest_events, COLUMNS, rows[3:])
        again = await bulk.insert_new(conn, ingest_events, COLUMNS, rows)
    assert sorted(first) == sorted(odd) and sorted(second) == plain and again == []
    async with db.read() as conn:
        stored = {(r.event_id, r.source, r.received_at) for r in await conn.execute(select(ingest_events))}
    assert stored == set(rows)


async def test_insert_many_stores_what_core_would(db: Database) -> None:
    other_zone = WHEN.astimezone(timezone(timedelta(hours=2)))  # the same instant, written as UTC
    headers = {"ce_id": "e1", "ce_time": WHEN.isoformat()}
    rows = [("t", 0, i, f"k{i}", b"\x00value" + bytes([i]), headers, other_zone if i % 2 else WHEN)
            for i in range(5)]
    async with db.transaction() as conn:
        await bulk.insert_many(conn, bus_log, ("topic", "partition", "offset", "key", "value", "headers",
                                               "created_at"), rows)
        await conn.execute(insert(bus_log), [{"topic": "core", "partition": 0, "offset": 0, "key": "k0",
                                              "value": b"\x00value\x00", "headers": headers,
                                              "created_at": WHEN}])
    async with db.read() as conn:
        stored = (await conn.execute(select(bus_log).where(bus_log.c.topic == "t").order_by(bus_log.c.offset))
                  ).all()
        core = (await conn.execute(select(bus_log).where(bus_log.c.topic == "core"))).one()
    assert [(r.key, bytes(r.value), r.headers, r.created_at) for r in stored] == [
        (f"k{i}", b"\x00value" + bytes([i]), headers, WHEN) for i in range(5)]
    assert (core.key, bytes(core.value), core.headers, core.created_at) == \
           (stored[0].key, bytes(stored[0].value), stored[0].headers, stored[0].created_at)


async def test_insert_many_can_ignore_conflicts(db: Database) -> None:
    rows = [("dup", "website", WHEN), ("fresh", "website", WHEN)]
    async with db.transaction() as conn:
        await bulk.insert_many(conn, ingest_events, COLUMNS, rows[:1])
        await bulk.insert_many(conn, ingest_events, COLUMNS, rows, ignore_conflicts=True)
        await bulk.insert_many(conn, ingest_events, COLUMNS, [])
    async with db.read() as conn:
        assert await bulk.existing(conn, ingest_events.c.event_id, ["dup", "fresh"]) == {"dup", "fresh"}
