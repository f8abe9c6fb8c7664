"""The stage chain derived on write (services/stage_chain.py): right whatever order the rows arrive in,
and derived by the migration for the history stored before it existed."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.db.database import Database
from services.db.migrate import migrate
from services.db.models import stage_history
from services.stage_chain import refresh_stage_chain
from services.stages import STAGES
from tests.support.infra import postgres_database
from tests.support.stage_chain import assert_chain, stored

pytestmark = pytest.mark.integration

T = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def journey(rng: random.Random, lead: str) -> list[dict[str, Any]]:
    """History rows of one lead: moves along and off the funnel, re-entries (sql -> sql), equal times."""
    rows, stage, at = [], None, T + timedelta(minutes=rng.randrange(60))
    for _ in range(rng.randrange(1, 8)):
        to = stage if stage is not None and rng.random() < 0.2 else rng.choice(STAGES)
        at += timedelta(seconds=rng.choice((0, 0.25, 90, 3600 * 5)))
        rows.append({"lead_id": lead, "from_stage": stage, "to_stage": to, "at": at, "cause": "test"})
        stage = to
    return rows


@pytest.mark.parametrize("seed", range(6))
async def test_the_chain_is_right_whatever_order_rows_arrive_in(db: Database, seed: int) -> None:
    rng = random.Random(seed)
    rows = [row for lead in ("a", "b", "c") for row in journey(rng, lead)]
    rng.shuffle(rows)  # a CRM callback may report a stage change older than the lead's latest one
    while rows:
        batch, rows = rows[:rng.randrange(1, 4)], rows[rng.randrange(1, 4):]
        async with db.transaction() as conn:
            await conn.execute(stage_history.insert(), batch)
            await refresh_stage_chain(conn, {row["lead_id"] for row in batch})
            assert_chain(await stored(conn))


async def test_refreshing_again_changes_nothing(db: Database) -> None:
    rows = journey(random.Random(7), "a")
    async with db.transaction() as conn:
        await conn.execute(stage_history.insert(), rows)
        await refresh_stage_chain(conn, ["a"])
        before = await stored(conn)
        await refresh_stage_chain(conn, ["a", "a", "unknown-lead"])
        assert await stored(conn) == before


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_migration_derives_the_chain_of_history_stored_before_it(kind: str, tmp_path: Path) -> None:
    rows = [row for lead in ("a", "b") for row in journey(random.Random(3), lead)]
    with _database(kind, tmp_path) as url:
        await migrate(url, "0001")
        db = Database(url)
        try:
            async with db.transaction() as conn:
                for row in rows:  # only the columns revision 0001 has
                    await conn.execute(stage_history.insert().values(**row))
            await migrate(url)
            async with db.read() as conn:
                got = await stored(conn)
        finally:
            await db.dispose()
    assert len(got) == len(rows) and any(row.top is not None for row in got)
    assert_chain(got)


def _database(kind: str, tmp_path: Path) -> Any:
    if kind == "postgres":
        return postgres_database("handoff_chain")
    from contextlib import nullcontext

    return nullcontext(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
