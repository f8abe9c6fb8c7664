"""Apply the Alembic migrations shipped in the package (``handoff migrate``)::

    await migrate("sqlite+aiosqlite:///./handoff.db")
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.db.database import null_pool_engine


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("services").joinpath("migrations")))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision``; safe to run again (and from several processes on
    PostgreSQL: an advisory lock serialises them)."""
    engine = null_pool_engine(url)
    try:
        async with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_lock(74190001)"))
            else:
                # WAL once, here, before any service opens the file: a process's connections then find
                # it set, instead of racing each other to switch modes (services/db/database.py).
                await conn.exec_driver_sql("PRAGMA busy_timeout=30000")
                await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            await conn.run_sync(_upgrade, url, revision)
            await conn.commit()
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, url: str, revision: str) -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines are noise at every start
    config = alembic_config(url)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def migrate_sync(url: str) -> None:
    asyncio.run(migrate(url))
