"""Table upkeep for a PostgreSQL server whose autovacuum is off: VACUUM and ANALYZE of our own tables.

    upkeep = TableUpkeep(db, interval=10.0)
    await upkeep.run(stop)              # a background task of every process; returns when stop is set
    done = await upkeep.round()         # one round: ["VACUUM (ANALYZE) outbox", "ANALYZE touchpoints"]

Without autovacuum nothing reclaims the rows the outbox relay deletes and the versions every lead update
leaves behind, and nothing gathers the statistics the planner chooses index scans with: the outbox, the
deliveries and the leads grow without bound, and the hot statements become scans of whole tables
(measured: a bench pipeline's PostgreSQL went from 0.40 to 0.68 of a core in 75 s at 1,000 tp/s,
flat with this upkeep). Servers with autovacuum on (the default) are left to it: each round only asks.

The decision is :func:`plan_upkeep`, a pure function with PostgreSQL's own autovacuum rules and default
thresholds; the rounds of several processes are serialised by an advisory lock (one round at a time,
the others skip).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.db.database import Database
from services.db.models import metadata

log = logging.getLogger(__name__)

UPKEEP_LOCK_ID = 74190003  # beside the outbox relay's 74190002
SLOW_ROUND_SECONDS = 1.0  # rounds slower than this are logged at INFO, the others at DEBUG


@dataclass(frozen=True)
class TableActivity:
    """One table's counters from ``pg_stat_user_tables``."""

    table: str
    live: int
    dead: int
    changed_since_analyze: int
    inserted_since_vacuum: int


@dataclass(frozen=True)
class Thresholds:
    """When a table is due, as autovacuum decides it: ``base + scale * live rows`` (PostgreSQL's
    defaults: autovacuum_vacuum_*, autovacuum_vacuum_insert_*, autovacuum_analyze_*)."""

    vacuum_base: int = 50
    vacuum_scale: float = 0.2
    insert_base: int = 1000
    insert_scale: float = 0.2
    analyze_base: int = 50
    analyze_scale: float = 0.1


@dataclass(frozen=True)
class Chore:
    """What one table gets this round."""

    table: str
    vacuum: bool
    analyze: bool

    @property
    def statement(self) -> str:
        if self.vacuum:
            return f'VACUUM (ANALYZE) "{self.table}"' if self.analyze else f'VACUUM "{self.table}"'
        return f'ANALYZE "{self.table}"'


def plan_upkeep(tables: Iterable[TableActivity], limits: Thresholds = Thresholds()) -> list[Chore]:
    """The tables due for a VACUUM (dead rows, or rows inserted since the last one) or an ANALYZE
    (rows changed since the last one), in table-name order; tables with nothing due are left out."""
    chores = []
    for t in sorted(tables, key=lambda t: t.table):
        vacuum = (t.dead > limits.vacuum_base + limits.vacuum_scale * t.live
                  or t.inserted_since_vacuum > limits.insert_base + limits.insert_scale * t.live)
        analyze = t.changed_since_analyze > limits.analyze_base + limits.analyze_scale * t.live
        if vacuum or analyze:
            chores.append(Chore(t.table, vacuum=vacuum, analyze=analyze))
    return chores


class TableUpkeep:
    """VACUUM / ANALYZE the service's tables every ``interval`` seconds while autovacuum is off
    (PostgreSQL only; ``interval`` 0 turns it off)."""

    def __init__(self, db: Database, *, interval: float, limits: Thresholds = Thresholds()) -> None:
        self.db = db
        self.interval = interval
        self.limits = limits
        self.tables = sorted(metadata.tables)
        self._warned = False

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop`` is set. Waits for ``stop`` either way: the process ends when a task does."""
        if not self.db.is_postgres or self.interval <= 0:
            await stop.wait()
            return
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                await asyncio.wait([stopping], timeout=self.interval)
                if stop.is_set():
                    return
                # A VACUUM may wait for a lock or take long on a big table: stopping must not wait for it.
                chores = asyncio.ensure_future(self.round())
                await asyncio.wait([chores, stopping], return_when=asyncio.FIRST_COMPLETED)
                if not chores.done():
                    chores.cancel()
                    await asyncio.gather(chores, return_exceptions=True)
                    return
                error = chores.exception()
                if isinstance(error, SQLAlchemyError | OSError):  # the database is away
                    log.warning("table upkeep: %s; trying again in %.0fs", error, self.interval)
                elif error is not None:  # a bug: said loudly, but upkeep is never worth stopping the service
                    log.error("table upkeep failed; trying again in %.0fs", self.interval, exc_info=error)
        finally:
            stopping.cancel()

    async def round(self) -> list[str]:
        """One round: the statements it ran (none if autovacuum is on or another process's round runs)."""
        async with self.db.writer.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")  # VACUUM refuses transactions
            if (await conn.execute(text("SHOW autovacuum"))).scalar() == "on":
                return []
            self._warn_once()
            if not (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": UPKEEP_LOCK_ID})).scalar():
                return []
            try:
                return await self._chores(conn)
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": UPKEEP_LOCK_ID})

    async def _chores(self, conn: AsyncConnection) -> list[str]:
        rows = await conn.execute(text(
            "SELECT relname, n_live_tup, n_dead_tup, n_mod_since_analyze, n_ins_since_vacuum "
            "FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = ANY(:tables)"),
            {"tables": self.tables})
        chores = plan_upkeep([TableActivity(*row) for row in rows], self.limits)
        started, done = time.monotonic(), []
        for chore in chores:
            await conn.execute(text(chore.statement))
            done.append(chore.statement)
        took = time.monotonic() - started
        if done:
            log.log(logging.INFO if took > SLOW_ROUND_SECONDS else logging.DEBUG,
                    "table upkeep: %s (%.2fs)", "; ".join(done), took)
        return done

    def _warn_once(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning("PostgreSQL's autovacuum is off on this server: handoff VACUUMs and ANALYZEs its own "
                        "tables every %.0fs instead (HANDOFF_DB_UPKEEP_SECONDS; 0 = never). Without either, "
                        "the outbox and the leads grow without bound and their statements slow down; "
                        "turn autovacuum on (postgresql.conf: autovacuum = on) to leave it to the server.",
                        self.interval)
