"""With autovacuum off (as on this machine's PostgreSQL, set for CI), a round of upkeep VACUUMs the
tables the relay churns and ANALYZEs the ones that grew; rounds of several processes never overlap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, text

from services.db.database import Database
from services.db.models import outbox
from services.db.upkeep import UPKEEP_LOCK_ID, TableUpkeep
from services.events import Event
from services.outbox import add_events
from tests.support.polling import eventually

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("database_url", ["postgres"], indirect=True)]


@pytest.fixture
async def autovacuum_off(db: Database) -> AsyncIterator[None]:
    async with db.read() as conn:
        if (await conn.execute(text("SHOW autovacuum"))).scalar() == "on":
            pytest.skip("this PostgreSQL server runs autovacuum: upkeep rounds do nothing there by design")
    yield


async def outbox_counters(db: Database) -> tuple[int, int]:
    async with db.read() as conn:
        row = (await conn.execute(text(
            "SELECT n_dead_tup, vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox'"))).one()
    return int(row[0]), int(row[1])


async def churn_outbox(db: Database, rows: int) -> None:
    """Queue ``rows`` events as the services do, then delete them as the relay does: every row ends up dead."""
    async with db.transaction() as conn:
        await add_events(conn, "t", [Event.new("x", source="test", key=f"k{i}", data={}) for i in range(rows)])
    async with db.transaction() as conn:
        await conn.execute(delete(outbox))
        await conn.execute(text("SELECT pg_stat_force_next_flush()"))


async def test_a_round_vacuums_the_churned_outbox(db: Database, autovacuum_off: None) -> None:
    _, vacuums_before = await outbox_counters(db)
    await churn_outbox(db, 500)

    async def counted() -> bool:
        return (await outbox_counters(db))[0] >= 500
    await eventually(counted, 10, "the outbox's dead rows in the statistics")
    done = await TableUpkeep(db, interval=10.0).round()
    assert 'VACUUM (ANALYZE) "outbox"' in done

    async def vacuumed() -> bool:
        dead, vacuums = await outbox_counters(db)
        return vacuums > vacuums_before and dead < 500
    await eventually(vacuumed, 10, "the outbox vacuumed")
    assert await TableUpkeep(db, interval=10.0).round() == []  # nothing due any more anywhere


async def test_a_round_is_skipped_while_another_process_holds_the_upkeep_lock(
        db: Database, autovacuum_off: None) -> None:
    await churn_outbox(db, 500)
    holder = Database(db.url, pool_size=1)
    try:
        async with holder.read() as conn:
            assert (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": UPKEEP_LOCK_ID})).scalar()
            assert await TableUpkeep(db, interval=10.0).round() == []
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": UPKEEP_LOCK_ID})
    finally:
        await holder.dispose()


async def test_the_task_runs_rounds_until_stopped(db: Database, autovacuum_off: None) -> None:
    await churn_outbox(db, 500)
    _, vacuums_before = await outbox_counters(db)
    stop = asyncio.Event()
    task = asyncio.create_task(TableUpkeep(db, interval=0.05).run(stop))

    async def vacuumed() -> bool:
        return (await outbox_counters(db))[1] > vacuums_before
    await eventually(vacuumed, 10, "a round of the task")
    assert not task.done()  # a background task that returns would end the process
    stop.set()
    await asyncio.wait_for(task, 5.0)


async def test_stopping_does_not_wait_for_a_vacuum_that_waits(db: Database, autovacuum_off: None) -> None:
    """A VACUUM waiting for a lock (or working through a big table) must not hold up the process's stop."""
    await churn_outbox(db, 500)
    holder = Database(db.url, pool_size=1)
    try:
        async with holder.transaction() as conn:
            await conn.execute(text("LOCK TABLE outbox IN SHARE UPDATE EXCLUSIVE MODE"))  # VACUUM's own lock

            async def vacuum_waiting() -> bool:
                async with db.read() as reader:
                    return bool((await reader.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE 'VACUUM%outbox%' AND datname = current_database()"))).scalar())

            stop = asyncio.Event()
            task = asyncio.create_task(TableUpkeep(db, interval=0.05).run(stop))
            await eventually(vacuum_waiting, 10, "the upkeep's VACUUM waiting for the outbox lock")
            stop.set()
            done, _ = await asyncio.wait({task}, timeout=5.0)  # not cancelled: it must end by itself
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert task in done, "the stop waited for the VACUUM"
            assert task.exception() is None
    finally:
        await holder.dispose()


async def test_a_failing_round_is_logged_and_the_next_one_still_comes(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    class Flaky(TableUpkeep):
        calls = 0

        async def round(self) -> list[str]:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("a bug in a round")
            return []

    stop = asyncio.Event()
    task = asyncio.create_task(Flaky(db, interval=0.01).run(stop))

    async def second_round() -> bool:
        return Flaky.calls >= 2
    await eventually(second_round, 10, "a second round after the failed one")
    assert not task.done()  # upkeep is never worth stopping the service for
    stop.set()
    await asyncio.wait_for(task, 5.0)
    assert "table upkeep failed" in caplog.text and "a bug in a round" in caplog.text
