"""The process's database handle: one write path, many readers, the same API on SQLite and PostgreSQL.

    db = Database.from_url(settings.database_url)
    async with db.transaction() as conn:        # one atomic unit of work; commits on exit
        await conn.execute(insert(leads).values(...))
    async with db.read() as conn:
        rows = (await conn.execute(select(leads))).all()
    await db.dispose()

SQLite (the embedded default) allows one writer at a time: writes go through one connection guarded by
a lock and start with ``BEGIN IMMEDIATE`` (so they never fail half-way with "database is locked"),
readers use their own connections (WAL mode). PostgreSQL uses one pool for both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

SQLITE_PRAGMAS = (
    # First, so that every later statement on the connection waits for a lock instead of failing.
    "PRAGMA busy_timeout=30000",
    # Persistent in the file and normally set once by ``migrate`` (services/db/migrate.py): switching
    # modes needs an exclusive lock, and two connections racing to switch fail with "database is locked"
    # at once (SQLite's deadlock rule skips the busy handler). Here it only covers an unmigrated file.
    "PRAGMA journal_mode=WAL",
    # NORMAL in WAL mode is durable against a killed process (the WAL is written before commit returns);
    # only an OS crash or power loss may lose the last transactions.
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)


def json_text(value: Any) -> str:
    """``value`` as JSON text for a JSON column. Keys that are not strings are written as strings; orjson
    is asked for that only when it meets one (the option costs a third more on every value)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _json_loads(value: Any) -> Any:
    # SQLite gives JSON columns numeric affinity: the JSON text "0" comes back as the integer 0.
    return orjson.loads(value) if isinstance(value, str | bytes | bytearray) else value


# JSON columns go through orjson: the standard library's encoder was a tenth of the scoring consumer's time.
JSON_CODEC: dict[str, Any] = {"json_serializer": json_text, "json_deserializer": _json_loads}


def _sqlite_engine(url: str, immediate: bool, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_pre_ping=False, **JSON_CODEC)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us emit BEGIN ourselves (pysqlite's implicit transactions would defer the write lock).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


PING_AFTER_IDLE_SECONDS = 1.0
"""A pooled PostgreSQL connection idle longer than this is pinged before use (see ``_postgres_engine``)."""


def _postgres_engine(url: str, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800, **JSON_CODEC)

    @event.listens_for(engine.sync_engine, "connect")
    def _fresh(_dbapi_connection: Any, record: Any) -> None:
        record.info.pop(_IDLE_SINCE, None)  # just connected: nothing to test

    @event.listens_for(engine.sync_engine, "checkin")
    def _idle(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # A pooled connection may have died (server restart, terminated backend): test it before use,
        # as pool_pre_ping would, in one round trip -- but only one that sat idle for a while, as
        # pgbouncer's server_check_delay does. Under load a connection is back in use within
        # milliseconds, and the ping was a round trip per transaction (0.3 ms of client CPU; 13 % of all
        # statements at 300 tp/s). A connection cut in that window fails its first statement instead:
        # SQLAlchemy sees the disconnect and drops the pool's connections, and the caller's transient-
        # failure path retries (consumers, relay, workers) or answers 503 (HTTP), as for a cut mid-
        # transaction. pool_pre_ping's asyncpg ping takes three round trips (BEGIN, a prepared ";",
        # ROLLBACK). asyncpg sends an execute() without arguments in the simple protocol: nothing is
        # prepared, so it also suits pgbouncer. (Not the empty query: asyncpg 0.32 fails on its empty
        # response.)
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_connection.run_async(lambda driver: driver.execute("SELECT 1"))
        except Exception as exc:  # the pool drops this connection and connects a new one
            raise DisconnectionError(f"pooled connection failed its ping: {exc!r}") from exc

    return engine


_IDLE_SINCE = "handoff_idle_since"


class Database:
    """Engines for one database URL, created when the process boots (never at import)."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        self._write_lock: asyncio.Lock | None = None
        self._commit_hooks: list[Callable[[dict[str, Any]], None]] = []
        if self.dialect == "sqlite":
            self.writer = _sqlite_engine(url, immediate=True, pool_size=1)
            self.reader = _sqlite_engine(url, immediate=False, pool_size=4)
            self._write_lock = asyncio.Lock()
        else:
            self.writer = _postgres_engine(url, pool_size)
            self.reader = self.writer

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Database:
        return cls(url, **kwargs)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def on_commit(self, hook: Callable[[dict[str, Any]], None]) -> None:
        """Call ``hook(info)`` after every committed write with the flags the transaction left in
        ``conn.info`` (e.g. "the outbox has rows": wake the relay). A hook must not raise."""
        self._commit_hooks.append(hook)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One atomic write: commits when the block ends, rolls back if it raises."""
        if self._write_lock is not None:
            async with self._write_lock:
                async with self.writer.begin() as conn:
                    yield conn
                    flags = dict(conn.info)
                    conn.info.clear()
        else:
            async with self.writer.begin() as conn:
                yield conn
                flags = dict(conn.info)
                conn.info.clear()
        self._after_commit(flags)

    def _after_commit(self, flags: dict[str, Any]) -> None:
        for hook in self._commit_hooks:
            try:
                hook(flags)
            except Exception:  # the write is committed; a hook's failure must not make it look failed
                logging.getLogger(__name__).exception("post-commit hook failed")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.reader.connect() as conn:
            yield conn

    async def ping(self) -> None:
        """Raise if the database cannot be reached (readiness)."""
        async with self.reader.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


def null_pool_engine(url: str) -> AsyncEngine:
    """A pool-less engine for one-shot commands (migrations, CLI)."""
    return create_async_engine(url, poolclass=NullPool, **JSON_CODEC)
