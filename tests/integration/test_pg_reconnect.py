"""A pooled PostgreSQL connection that died (restart, terminated backend) is replaced before use."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from services.db.database import Database

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("database_url", ["postgres"], indirect=True)]


async def backend_pid(db: Database) -> int:
    async with db.transaction() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_terminated_pooled_connection_is_replaced_without_an_error(database_url: str) -> None:
    db, admin = Database(database_url, pool_size=1), Database(database_url, pool_size=1)
    try:
        first = await backend_pid(db)  # now idle in db's pool
        async with admin.transaction() as conn:
            assert (await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})).scalar_one()
        second = await backend_pid(db)  # the checkout ping finds it dead; the pool connects anew
        assert second != first
        async with db.read() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await db.dispose()
        await admin.dispose()


async def test_the_checkout_ping_opens_no_transaction(database_url: str) -> None:
    # pool_pre_ping's asyncpg ping is BEGIN, ";", ROLLBACK on every checkout; ours is one SELECT 1 outside
    # any transaction. A committed transaction adds no rollback, so 20 checkouts must not add 20 of them.
    db = Database(database_url, pool_size=1)
    try:
        await backend_pid(db)

        async def rollbacks() -> int:
            async with db.read() as conn:
                return int((await conn.execute(text(
                    "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()"))).scalar_one())

        before = await rollbacks()
        for _ in range(20):
            await backend_pid(db)
        # A backend reports its counts at most once a second unless told to at its next transaction end.
        async with db.read() as conn:
            await conn.execute(text("SELECT pg_stat_force_next_flush()"))
        after = await rollbacks()
        assert after - before < 20, f"{after - before} rollbacks for 20 checkouts: the ping opens transactions"
    finally:
        await db.dispose()
