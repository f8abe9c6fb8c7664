"""A pooled PostgreSQL connection that died (restart, terminated backend) is replaced: before use when it
sat idle, at its first failed statement (a transient error the caller retries) when it was just used."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.db import database as database_module
from services.db.database import Database
from tests.support.leadfactory import bearer, sales_api

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("database_url", ["postgres"], indirect=True)]


async def backend_pid(db: Database) -> int:
    async with db.transaction() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def terminate(admin: Database, pid: int) -> None:
    async with admin.transaction() as conn:
        assert (await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})).scalar_one()


async def test_a_terminated_idle_connection_is_replaced_without_an_error(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_SECONDS", 0.0)  # every checkout counts as idle
    db, admin = Database(database_url, pool_size=1), Database(database_url, pool_size=1)
    try:
        first = await backend_pid(db)  # now idle in db's pool
        await terminate(admin, first)
        second = await backend_pid(db)  # the checkout ping finds it dead; the pool connects anew
        assert second != first
        async with db.read() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await db.dispose()
        await admin.dispose()


async def test_a_connection_cut_right_after_use_fails_once_then_the_pool_reconnects(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Back in use within PING_AFTER_IDLE_SECONDS: no ping, so the first statement meets the cut. It must
    # come back as a disconnect (which the consumers, relay and workers treat as transient and retry),
    # and the next transaction must get a new connection.
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_SECONDS", 3600.0)
    db, admin = Database(database_url, pool_size=1), Database(database_url, pool_size=1)
    try:
        first = await backend_pid(db)
        await terminate(admin, first)
        with pytest.raises(DBAPIError) as failed:
            await backend_pid(db)
        assert failed.value.connection_invalidated
        second = await backend_pid(db)
        assert second != first
    finally:
        await db.dispose()
        await admin.dispose()


async def test_the_checkout_ping_opens_no_transaction(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_SECONDS", 0.0)  # ping at every checkout
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


async def test_an_api_read_on_a_connection_cut_right_after_use_answers_503_then_works(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The API's reads take the same unpinged path: the request that meets the cut gets 503 with
    # Retry-After (a dependency failed: retry), never a 500, and the retry is answered.
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_SECONDS", 3600.0)
    admin = Database(database_url, pool_size=1)
    try:
        async with sales_api(database_url) as (client, container):
            assert (await client.get("/v1/leads", headers=bearer("test-token"))).status_code == 200
            async with container.db.read() as conn:  # the connection the next request gets
                pid = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            await terminate(admin, pid)
            cut = await client.get("/v1/leads", headers=bearer("test-token"))
            assert cut.status_code == 503, cut.text
            assert cut.headers["retry-after"] == "1"
            assert cut.json()["error"]["code"] == "unavailable"
            assert (await client.get("/v1/leads", headers=bearer("test-token"))).status_code == 200
    finally:
        await admin.dispose()
