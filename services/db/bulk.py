"""Many rows in few round trips, straight through the driver: the hot paths' inserts (ingest, the bus log).

    await insert_many(conn, bus_log, ["topic", "partition", ...], rows)           # executemany
    new = await insert_new(conn, ingest_events, ["event_id", "source", "received_at"], rows)
    # -> the event ids that were not there yet (INSERT ... ON CONFLICT DO NOTHING RETURNING)
    seen = await existing(conn, ingest_events.c.event_id, ids)                    # SELECT ... IN

``rows`` are tuples in the order of ``columns``, holding what a Core statement would take (aware
datetimes, dicts for JSON columns). Each value goes through its column type's own bind processor,
so the driver receives exactly what Core would have sent; but SQLAlchemy's per-row, per-parameter
bookkeeping (a tenth of a millisecond per bus-log row) is skipped, and values that repeat (one
``received_at`` per request, one ``created_at`` per batch) are converted once.

Works on SQLite (``?``) and PostgreSQL/asyncpg (``$n`` with the casts Core renders).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Column, DateTime, LargeBinary, String, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from services.db.arrays import SQL_SPLIT, joined_texts, one_value

# Bind parameters per statement: SQLite allows 32766 since 3.32 (999 before); PostgreSQL's statements
# here take arrays or one row. Fewer, larger statements: fewer trips to aiosqlite's thread.
MAX_PARAMS = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999

Processor = Callable[[Any], Any]


def _marks(dialect: Dialect, columns: Sequence[Column[Any]]) -> list[str]:
    """One parameter's text per column, ``{}`` where its position goes."""
    style = dialect.paramstyle
    if style == "qmark":
        return ["?"] * len(columns)
    if style == "numeric_dollar":  # asyncpg: Core renders a cast on every parameter; so do we
        return ["${}::" + column.type.compile(dialect) for column in columns]
    raise NotImplementedError(f"bulk statements do not support the {style!r} parameter style")


@lru_cache(maxsize=256)
def _values_groups(dialect: Dialect, columns: tuple[Column[Any], ...], rows: int) -> str:
    """``(?, ?), (?, ?)`` or ``($1::T, $2::U), ($3::T, $4::U)`` for ``rows`` rows."""
    marks = _marks(dialect, columns)
    width = len(columns)
    return ", ".join("(" + ", ".join(m.format(r * width + i + 1) for i, m in enumerate(marks)) + ")"
                     for r in range(rows))


def _processors(dialect: Dialect, columns: Sequence[Column[Any]]) -> list[Processor | None]:
    out: list[Processor | None] = []
    for column in columns:
        process: Processor | None = column.type.dialect_impl(dialect).bind_processor(dialect)
        if isinstance(column.type, LargeBinary):
            process = None  # bytes go to both drivers as they are; the processor only wraps them
        elif process is not None and isinstance(getattr(column.type, "impl", column.type), DateTime):
            process = _memoized(process)  # the same instant repeats across rows: convert it once
        out.append(process)
    return out


def _memoized(process: Processor) -> Processor:
    memo: dict[Any, Any] = {}

    def convert(value: Any) -> Any:
        try:
            return memo[value]
        except KeyError:
            if len(memo) > 64:
                memo.clear()
            memo[value] = converted = process(value)
            return converted

    return convert


def _prepare(dialect: Dialect, processors: list[Processor | None], rows: Sequence[tuple[Any, ...]]
             ) -> list[tuple[Any, ...]]:
    active = [(i, p) for i, p in enumerate(processors) if p is not None]
    if not active:
        return [tuple(row) for row in rows]
    out = []
    for row in rows:
        values = list(row)
        for i, process in active:
            value = values[i]
            if value is not None:
                values[i] = process(value)
        out.append(tuple(values))
    return out


def _columns(table: Table, names: Sequence[str]) -> tuple[Column[Any], ...]:
    return tuple(table.c[name] for name in names)


def _head(dialect: Dialect, table: Table, columns: Sequence[Column[Any]]) -> str:
    prep = dialect.identifier_preparer
    return f"INSERT INTO {prep.format_table(table)} ({', '.join(prep.quote(c.name) for c in columns)})"


async def insert_many(conn: AsyncConnection, table: Table, names: Sequence[str], rows: Sequence[tuple[Any, ...]],
                      *, ignore_conflicts: bool = False) -> None:
    """``INSERT`` every row (one ``executemany``); ``ignore_conflicts`` adds ``ON CONFLICT DO NOTHING``."""
    if not rows:
        return
    dialect = conn.dialect
    columns = _columns(table, names)
    sql = f"{_head(dialect, table, columns)} VALUES {_values_groups(dialect, columns, 1)}"
    if ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    await conn.exec_driver_sql(sql, _prepare(dialect, _processors(dialect, columns), rows))


async def insert_new(conn: AsyncConnection, table: Table, names: Sequence[str],
                     rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Insert the rows whose key (the first column, the table's primary key) is not there yet; return
    those keys. One multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per chunk of rows."""
    if not rows:
        return []
    dialect = conn.dialect
    columns = _columns(table, names)
    quote = dialect.identifier_preparer.quote
    params = _prepare(dialect, _processors(dialect, columns), rows)
    tail = f" ON CONFLICT DO NOTHING RETURNING {quote(columns[0].name)}"
    if dialect.paramstyle == "numeric_dollar":
        # PostgreSQL: one array per column, so one statement text whatever the row count (asyncpg keeps
        # one prepared statement instead of one per count) and no parameter limit. A text column's
        # values travel as one joined text where they can (services.db.arrays.joined_texts: asyncpg
        # checks every element of a text array against an abstract class, a Python call each), and a
        # column holding one value in every row (a batch request's ``received_at``) as that value,
        # repeated by the server (asyncpg encodes each time of an array in Python, ~0.8 us apiece).
        parameters: list[Any] = [list(column) for column in zip(*params, strict=True)]
        count = f"${len(columns) + 1}::INT"  # the row count, a parameter after the columns' when one needs it
        arrays, needs_count = [], False
        for i, (column, values) in enumerate(zip(columns, parameters, strict=True)):
            element_type = column.type.compile(dialect)
            joined = joined_texts(values) if isinstance(column.type, String) else None
            if joined is not None:
                parameters[i] = joined
                arrays.append(f"CAST(string_to_array(${i + 1}::TEXT, {SQL_SPLIT}) AS {element_type}[])")
            elif one_value(values):
                parameters[i], needs_count = values[0], True
                arrays.append(f"array_fill(${i + 1}::{element_type}, ARRAY[{count}])")
            else:
                arrays.append(f"${i + 1}::{element_type}[]")
        if needs_count:
            parameters.append(len(params))
        sql = f"{_head(dialect, table, columns)} SELECT * FROM unnest({', '.join(arrays)}){tail}"
        return list((await conn.exec_driver_sql(sql, tuple(parameters))).scalars().all())
    per_statement = max(1, MAX_PARAMS // len(columns))
    head = _head(dialect, table, columns)
    new: list[Any] = []
    for start in range(0, len(params), per_statement):
        chunk = params[start:start + per_statement]
        sql = f"{head} VALUES {_values_groups(dialect, columns, len(chunk))}{tail}"
        flat = tuple(value for row in chunk for value in row)
        new += (await conn.exec_driver_sql(sql, flat)).scalars().all()
    return new


async def existing(conn: AsyncConnection, column: Column[Any], keys: Sequence[Any]) -> set[Any]:
    """The ``keys`` present in ``column`` (``SELECT column FROM table WHERE column IN (...)``, chunked)."""
    if not keys:
        return set()
    dialect = conn.dialect
    table = column.table
    assert isinstance(table, Table)
    head = (f"SELECT {dialect.identifier_preparer.quote(column.name)} FROM "
            f"{dialect.identifier_preparer.format_table(table)} WHERE {dialect.identifier_preparer.quote(column.name)}"
            " IN ")
    process = _processors(dialect, [column])[0]
    found: set[Any] = set()
    for start in range(0, len(keys), MAX_PARAMS):
        chunk = [k if process is None else process(k) for k in keys[start:start + MAX_PARAMS]]
        marks = _values_groups(dialect, (column,) * len(chunk), 1)  # "(?, ?, ...)": one row of n keys
        found.update((await conn.exec_driver_sql(f"{head}{marks}", tuple(chunk))).scalars())
    return found
