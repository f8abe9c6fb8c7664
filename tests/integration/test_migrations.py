"""The migrations build exactly the schema the models describe, and go down and up again."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from services.db.database import Database
from services.db.migrate import alembic_config, migrate
from services.db.models import metadata

pytestmark = pytest.mark.integration


def differences(conn: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_migrated_schema_matches_the_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.read() as conn:
            assert await conn.run_sync(differences) == []
    finally:
        await db.dispose()


def downgrade_to_first(conn: Connection, url: str) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = conn
    command.downgrade(config, "0001")


def has_stage_chain(conn: Connection) -> bool:
    return "stay" in {c["name"] for c in inspect(conn).get_columns("stage_history")}


async def test_down_to_the_first_revision_and_up_again(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.transaction() as conn:
            await conn.run_sync(downgrade_to_first, database_url)
            assert not await conn.run_sync(has_stage_chain)
        await migrate(database_url)
        async with db.read() as conn:
            assert await conn.run_sync(has_stage_chain)
            assert await conn.run_sync(differences) == []
    finally:
        await db.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_migrated_sqlite_file_is_in_wal_mode_before_any_service_opens_it(database_url: str) -> None:
    # Connections that find WAL already set never race to switch modes (the race fails at once with
    # "database is locked", skipping the busy timeout): CI once lost a first touchpoint to it.
    path = database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db = Database(database_url)
    try:
        async def read_and_write(i: int) -> None:
            async with db.read() as conn:
                await conn.execute(text("SELECT count(*) FROM leads"))
            async with db.transaction() as conn:
                await conn.execute(text("SELECT 1"))

        await asyncio.gather(*(read_and_write(i) for i in range(8)))
    finally:
        await db.dispose()
