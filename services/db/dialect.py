"""The few statements that differ between SQLite and PostgreSQL, in one place.

    stmt = insert_ignore(conn, processed_events, rows)         # INSERT ... ON CONFLICT DO NOTHING
    stmt = upsert(conn, rep_state, row, ["rep_id"], ["available"])
    query = claim(conn, select(sla_timers).where(...))          # FOR UPDATE SKIP LOCKED on PostgreSQL
    seconds = seconds_between(conn.dialect.name, t.c.ended_at, t.c.started_at)  # a float
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Float, Select, Table, cast, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement


def _insert(dialect: str, table: Table) -> Any:
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


# Both are built once per table and column set: building one (``excluded`` above all) was 9 % of the
# notifier consumer's time per batch, and a statement built anew also has its cache key computed anew
# on every execution. Core statements are immutable: ``.returning(...)`` on one returns a new one.
def insert_ignore(conn: AsyncConnection, table: Table, index_elements: Sequence[str] | None = None) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING``; add ``.returning(...)`` to learn which rows were new."""
    return _insert_ignore(conn.dialect.name, table, None if index_elements is None else tuple(index_elements))


def upsert(conn: AsyncConnection, table: Table, keys: Sequence[str], update: Sequence[str]) -> Insert:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE SET col = excluded.col`` for each of ``update``."""
    return _upsert(conn.dialect.name, table, tuple(keys), tuple(update))


@lru_cache(maxsize=128)
def _insert_ignore(dialect: str, table: Table, index_elements: tuple[str, ...] | None) -> Insert:
    stmt = _insert(dialect, table)
    return stmt.on_conflict_do_nothing(  # type: ignore[no-any-return]
        index_elements=None if index_elements is None else list(index_elements))


@lru_cache(maxsize=128)
def _upsert(dialect: str, table: Table, keys: tuple[str, ...], update: tuple[str, ...]) -> Insert:
    stmt = _insert(dialect, table)
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=list(keys), set_={col: stmt.excluded[col] for col in update}
    )


def claim(conn: AsyncConnection, query: Select[Any]) -> Select[Any]:
    """Rows this worker may act on alone: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL. SQLite needs nothing:
    its writes are serialised (one writer), and claims run inside write transactions."""
    if conn.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def lock(conn: AsyncConnection, query: Select[Any]) -> Select[Any]:
    """``FOR UPDATE`` on PostgreSQL (wait for the row); a no-op on SQLite for the same reason as ``claim``."""
    if conn.dialect.name == "postgresql":
        return query.with_for_update()
    return query


def rows_as_dicts(rows: Sequence[Any]) -> list[Mapping[str, Any]]:
    return [dict(row._mapping) for row in rows]


def seconds_between(dialect: str, later: Any, earlier: Any) -> ColumnElement[Any]:
    """``later - earlier`` in seconds, as a float expression for the dialect (``conn.dialect.name``)."""
    if dialect == "postgresql":
        # date_part() gives a double; EXTRACT() a numeric, several times slower over 100,000s of rows.
        return cast(func.date_part("epoch", later - earlier), Float)
    # SQLite stores the UTC datetimes as text; julianday() reads that text (fractional days).
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0
