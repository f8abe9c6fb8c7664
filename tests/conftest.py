"""Shared fixtures: real databases (SQLite file, PostgreSQL) and real buses (embedded, Kafka-protocol)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from services.bus.base import Bus
from services.bus.kafka import KafkaBus
from services.bus.local import LocalBus
from services.db.database import Database
from services.db.migrate import migrate
from services.db.models import metadata
from tests.support.infra import Broker, postgres_database, run_coroutine, running_broker

DB_KINDS = ["sqlite", "postgres"]
BUS_KINDS = ["local", "kafka"]


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    with running_broker() as b:
        yield b


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        run_coroutine(migrate(url))
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "handoff.db"
    run_coroutine(migrate(f"sqlite+aiosqlite:///{path}"))
    return path


async def truncate_all(url: str) -> None:
    db = Database(url)
    try:
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        async with db.transaction() as conn:
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
    finally:
        await db.dispose()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of the kind in ``request.param`` ("sqlite" | "postgres")."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "handoff.db"
        shutil.copy(template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("pg_url")
    run_coroutine(truncate_all(url))
    return url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def bus(request: pytest.FixtureRequest, db: Database) -> AsyncIterator[Bus]:
    """A started bus of the kind in ``request.param`` ("local" | "kafka"), with its own topic prefix."""
    kind = getattr(request, "param", "local")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    instance: Bus
    if kind == "local":
        instance = LocalBus(db, prefix=prefix, partitions=4, lease_seconds=3)
    else:
        b: Broker = request.getfixturevalue("broker")
        instance = KafkaBus(b.bootstrap, prefix=prefix, partitions=4)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


@pytest.fixture(params=BUS_KINDS)
def bus_kind(request: pytest.FixtureRequest) -> str:
    """For tests that run a whole pipeline: the bus it runs on (the broker comes with "kafka")."""
    return str(request.param)


@pytest.fixture
def maybe_broker(request: pytest.FixtureRequest, bus_kind: str) -> Broker | None:
    return request.getfixturevalue("broker") if bus_kind == "kafka" else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Integration tests that take ``db``/``bus`` run on every database and every bus."""
    needs_db = "database_url" in metafunc.fixturenames
    if needs_db and "database_url" not in [m.args[0] for m in metafunc.definition.iter_markers("parametrize")]:
        metafunc.parametrize("database_url", DB_KINDS, indirect=True)
    if "bus" in metafunc.fixturenames:
        metafunc.parametrize("bus", BUS_KINDS, indirect=True)
