"""The statement pipe keeps one statement in flight, in order, and never hides or races a failure."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.db.database import Database
from services.db.models import score_history
from services.db.pipeline import StatementPipe
from services.events import utcnow


def _row(lead: str, total: float) -> dict[str, object]:
    return {"lead_id": lead, "at": utcnow(), "fit": 0.0, "engagement": total, "total": total, "cause": "test"}


async def _totals(db: Database) -> list[tuple[str, float]]:
    async with db.read() as conn:
        rows = await conn.execute(select(score_history.c.lead_id, score_history.c.total)
                                  .order_by(score_history.c.lead_id))
        return [(lead, float(total)) for lead, total in rows]


async def test_statements_apply_in_the_order_sent_and_results_come_back(db: Database) -> None:
    async with db.transaction() as conn, StatementPipe(conn) as pipe:
        await pipe.send(score_history.insert(), [_row("a", 1), _row("b", 2)])
        await pipe.send(update(score_history).where(score_history.c.lead_id == "a").values(total=10))
        counted = await pipe.send(select(func.count()).select_from(score_history))
        await pipe.send(update(score_history).where(score_history.c.total == 10).values(total=20))
        assert (await counted).scalar_one() == 2  # the count ran before the last update, and after the first
        assert (await pipe.execute(select(func.max(score_history.c.total)))).scalar_one() == 20
    assert await _totals(db) == [("a", 20.0), ("b", 2.0)]


async def test_a_failing_statement_raises_at_the_next_send_and_rolls_the_transaction_back(db: Database) -> None:
    with pytest.raises((IntegrityError, DBAPIError)):
        async with db.transaction() as conn, StatementPipe(conn) as pipe:
            await pipe.send(score_history.insert(), [_row("a", 1)])
            await pipe.send(score_history.insert().values(lead_id=None, at=utcnow(), fit=0, engagement=0, total=0))
            await pipe.send(score_history.insert(), [_row("c", 3)])
            pytest.fail("the send after a failed statement must raise")
    assert await _totals(db) == []


async def test_a_failure_of_the_last_statement_raises_from_the_block(db: Database) -> None:
    with pytest.raises((IntegrityError, DBAPIError)):
        async with db.transaction() as conn, StatementPipe(conn) as pipe:
            await pipe.send(score_history.insert(), [_row("a", 1)])
            await pipe.send(score_history.insert().values(lead_id=None, at=utcnow(), fit=0, engagement=0, total=0))
    assert await _totals(db) == []


async def test_an_error_in_the_block_is_the_one_raised(db: Database) -> None:
    with pytest.raises(ZeroDivisionError):
        async with db.transaction() as conn, StatementPipe(conn) as pipe:
            await pipe.send(score_history.insert(), [_row(f"l{i}", i) for i in range(300)])
            _ = 1 / 0
    assert await _totals(db) == []


# PostgreSQL: a statement is kept in flight for as long as a test needs by an advisory lock that another
# connection holds; the server shows the statement waiting for it.
LOCK = 915001


async def _blocked_on_lock(db: Database) -> bool:
    async with db.read() as conn:
        waiting = await conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%pg_advisory_xact_lock%' AND pid <> pg_backend_pid()"))
        return bool(waiting.scalar_one())


async def _release_once_blocked(db: Database, holder: AsyncConnection) -> None:
    while not await _blocked_on_lock(db):
        await asyncio.sleep(0.01)
    await holder.execute(text(f"SELECT pg_advisory_unlock({LOCK})"))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_send_returns_while_the_server_works_on_the_statement(db: Database) -> None:
    async with db.read() as holder:
        await holder.execute(text(f"SELECT pg_advisory_lock({LOCK})"))
        async with db.transaction() as conn, StatementPipe(conn) as pipe:
            locked = await pipe.send(text(f"SELECT pg_advisory_xact_lock({LOCK})"))
            for _ in range(500):  # the statement reached the server, and the send came back before it ended
                if await _blocked_on_lock(db):
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the piped statement never reached the server")
            assert not locked.done()
            await holder.execute(text(f"SELECT pg_advisory_unlock({LOCK})"))
            await pipe.wait()
            assert locked.done() and locked.exception() is None


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_an_error_in_the_block_waits_for_the_statement_in_flight_before_it_goes_on(db: Database) -> None:
    # The rollback must not meet a connection still busy with a statement: the block's error reaches
    # the caller only once the statement in flight has ended.
    async with db.read() as holder:
        await holder.execute(text(f"SELECT pg_advisory_lock({LOCK})"))
        release = asyncio.create_task(_release_once_blocked(db, holder))
        with pytest.raises(ZeroDivisionError):
            async with db.transaction() as conn, StatementPipe(conn) as pipe:
                locked = await pipe.send(text(f"SELECT pg_advisory_xact_lock({LOCK})"))
                _ = 1 / 0
        assert locked.done()
        await release
