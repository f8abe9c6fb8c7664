"""Rows as one array per column: inserts and updates of many rows in one statement on PostgreSQL.

    await insert_rows(conn, leads, new_rows)                          # every row with the same keys
    await insert_rows(conn, touchpoints, rows, ignore_conflicts=True)
    await update_rows(conn, leads, "id", changed_rows)                # UPDATE ... WHERE id = row["id"]
    statement, params = insert_statement(conn, outbox, rows)          # built now, sent later
    [(statement, params)] = combined_statements(conn, [update_statement(...), insert_statement(...)])  # PG

On PostgreSQL each call is ONE statement whatever the number of rows: the rows travel as one array per
column (a JSON column's values as one JSON document, a text or JSON-text column's as one joined text,
a time column holding one time for every row as that time and a count) and ``unnest`` turns them back
into rows on the server (an executemany is one statement per row on the server). On SQLite (one in-process writer, no
round trips) the plain SQLAlchemy forms are used. Rows are dicts of what a Core statement would take
(aware datetimes, dicts for JSON columns).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, Table, Text, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import TypeEngine

from services.db.database import json_text
from services.db.dialect import insert_ignore
from services.db.types import JsonText, UtcDateTime, stored_json

Row = Mapping[str, Any]


def _pg(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


async def insert_rows(conn: AsyncConnection, table: Table, rows: Sequence[Row], *,
                      ignore_conflicts: bool = False) -> None:
    """Insert ``rows`` (all with the same keys); with ``ignore_conflicts`` an existing key is skipped."""
    if rows:
        await conn.execute(*insert_statement(conn, table, rows, ignore_conflicts=ignore_conflicts))


async def update_rows(conn: AsyncConnection, table: Table, key: str, rows: Sequence[Row]) -> None:
    """``UPDATE table SET col = row[col] ... WHERE key = row[key]`` for every row (all with the same keys)."""
    if rows:
        await conn.execute(*update_statement(conn, table, key, rows))


Statement = tuple[Executable, Any]  # what to execute, and its parameters


def insert_statement(conn: AsyncConnection, table: Table, rows: Sequence[Row], *,
                     ignore_conflicts: bool = False) -> Statement:
    """:func:`insert_rows`'s statement and parameters, built but not sent (``rows`` not empty): for a
    caller that sends it later (``services.db.pipeline``)."""
    if _pg(conn):
        return insert_text(table, tuple(rows[0]), ignore_conflicts, ()), column_arrays(table, rows)
    return (insert_ignore(conn, table) if ignore_conflicts else table.insert()), list(rows)


def combined_statements(conn: AsyncConnection, statements: Sequence[Statement], *,
                        result_of: int | None = None) -> list[Statement]:
    """``statements`` (text statements such as :func:`insert_statement` / :func:`update_statement` build
    on PostgreSQL) as few as the dialect allows: on PostgreSQL ONE statement whose data-modifying
    ``WITH`` parts are these (one round trip; the parts cannot see each other's rows and must not need
    to), elsewhere unchanged. The combined statement returns the rows of ``statements[result_of]`` (its
    ``RETURNING``), or none. For a caller that sends them through a pipe: a connection runs one
    statement at a time, so each statement sent after the caller's last piece of work is waited for.

        for statement, parameters in combined_statements(conn, [update_statement(conn, leads, "id", rows),
                                                                  insert_statement(conn, outbox, events)]):
            await pipe.send(statement, parameters)
    """
    if len(statements) < 2 or not _pg(conn):
        return list(statements)
    parameters: dict[str, Any] = {}
    for i, (_, values) in enumerate(statements):
        parameters |= {f"p{i}_{name}": value for name, value in values.items()}
    return [(_combined(tuple(statement for statement, _ in statements), result_of), parameters)]


# A bound parameter of a text() statement. (Found in the SQL as text: a part whose string literals held
# ":word" would have it renamed too; the statements combined here hold no such literal.)
_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


@lru_cache(maxsize=64)
def _combined(statements: tuple[Executable, ...], result_of: int | None) -> TextClause:
    """The ``WITH`` statement of these text statements, each ``:name`` parameter of the i-th renamed
    ``:p{i}_name`` (built once per combination: a ``text()`` is parsed for its parameters)."""
    parts = []
    for i, statement in enumerate(statements):
        sql = str(statement)
        if not isinstance(statement, TextClause) or sql.lstrip().upper().startswith("WITH"):
            raise ValueError(f"cannot combine this statement (a text statement without WITH only): {sql[:80]}")
        renamed = _PARAMETER.sub(f":p{i}_" + r"\1", sql)
        parts.append(f"s{i} AS ({renamed})")
    result = "1" if result_of is None else f"* FROM s{result_of}"
    return text(f"WITH {', '.join(parts)} SELECT {result}")


def update_statement(conn: AsyncConnection, table: Table, key: str, rows: Sequence[Row]) -> Statement:
    """:func:`update_rows`'s statement and parameters, built but not sent (``rows`` not empty)."""
    names = tuple(rows[0])
    if _pg(conn):
        return _update_text(table, key, names), column_arrays(table, rows)
    statement = table.update().where(table.c[key] == bindparam(f"b_{key}")).values(
        {name: bindparam(f"b_{name}") for name in names if name != key})
    return statement, [{f"b_{name}": value for name, value in row.items()} for row in rows]


# ---------------------------------------------------------------- PostgreSQL: one array per column
# (Measured against sending all rows as one JSON document for ``jsonb_to_recordset``: that spares
# this process half its encoding time but costs the server more, and was no faster overall.)
# A JSON column is the exception: its values travel as ONE JSON document (an array, taken apart on the
# server). As a ``jsonb[]`` of JSON texts, each value cost an encode, a copy into a string and the
# driver's per-element checks here, and a parse of its own there: for the 500 payloads of a scoring
# batch's timeline insert, 7.0 ms of this process's CPU and 16-17 ms in all, against 4.2-4.6 and 12-13;
# through the scoring consumer, 3,250 -> 3,525 touchpoints/s (medians of six interleaved pairs).
# (All of a row's text columns as JSON documents too: less CPU here, more there, no faster.)
def _array_type(column_type: TypeEngine[Any]) -> str:
    if isinstance(column_type, UtcDateTime):
        return "TIMESTAMPTZ[]"
    if isinstance(column_type, Float):
        return "FLOAT8[]"
    if isinstance(column_type, Integer):  # BigInteger too
        return "INT8[]"
    if isinstance(column_type, String | Text):
        return "TEXT[]"
    raise TypeError(f"no array type for {column_type!r}")


def column_arrays(table: Table, rows: Sequence[Row]) -> dict[str, Any]:
    """The parameters of :func:`insert_text` and the update: one list per column, except a JSON column's
    values, which are one JSON array (text; a None value is JSON null, which becomes SQL NULL); a text
    column's, and a JSON-text column's JSON texts, which are one text (:func:`text_array_parameters`)
    unless a value holds a separator; and a time column's when every row holds one time (that time and
    a count)."""
    out: dict[str, Any] = {}
    for name in rows[0]:
        kind = _kind(table, name)
        if kind is _JSON:
            out[name] = json_text([row[name] for row in rows])
        elif kind is _TEXT:
            out |= text_array_parameters(name, [row[name] for row in rows])
        elif kind is _JSON_TEXT:  # each value's JSON text (never holding a separator: JSON escapes them)
            out |= text_array_parameters(name, [stored_json(row[name]) for row in rows])
        elif kind is _TIME:
            values = [row[name] for row in rows]
            out |= {name: None, f"{name}{SAME}": values[0], f"{name}{COUNT}": len(values)} if one_value(values) \
                else {name: values, f"{name}{SAME}": None, f"{name}{COUNT}": 0}
        else:
            out[name] = [row[name] for row in rows]
    return out


# A text column's values travel as ONE text, split on the server: as a TEXT[] the driver asks of every
# element, through two abstract-class checks, whether it is a nested array (a Python call each: some
# 20,000 per scoring batch, several milliseconds of its CPU). Unit separator between the values,
# record separator for a NULL; a column whose values hold either goes as an array, as before.
SEPARATOR, NULL_MARK = "\x1f", "\x1e"
JOINED = "__joined"  # suffix of the parameter that carries a column's joined text
SQL_SPLIT = f"E'\\x{ord(SEPARATOR):02x}', E'\\x{ord(NULL_MARK):02x}'"  # the two as SQL escape strings


def text_array(name: str) -> str:
    """The SQL of a ``TEXT[]`` parameter ``name`` sent as :func:`text_array_parameters` sends it::

        statement = text(f"SELECT e FROM unnest({text_array('ids')}) AS e")
        await conn.execute(statement, text_array_parameters("ids", ["a", None, "b"]))
    """
    return f"COALESCE(CAST(:{name} AS TEXT[]), string_to_array(CAST(:{name}{JOINED} AS TEXT), {SQL_SPLIT}))"


def text_array_parameters(name: str, values: list[Any]) -> dict[str, Any]:
    """The parameters of :func:`text_array`: ``values`` joined into one text, or the list when they
    cannot be."""
    joined = joined_texts(values)
    return {name: None, f"{name}{JOINED}": joined} if joined is not None else {name: values, f"{name}{JOINED}": None}


def joined_texts(values: list[Any]) -> str | None:
    """``values`` (str or None) as one text that ``string_to_array(text, SEPARATOR, NULL_MARK)`` splits
    back into them; None when it could not (a value holds a separator, is not text, or the text would be
    empty: ``string_to_array('', ...)`` is an empty array, not one empty string)."""
    try:
        joined = SEPARATOR.join([NULL_MARK if value is None else value for value in values])
    except TypeError:
        return None
    if not joined or joined.count(SEPARATOR) != len(values) - 1 or joined.count(NULL_MARK) != values.count(None):
        return None
    return joined


# A time column whose values are all one time (the batch's "now": when it was updated, queued, linked)
# travels as that time and a count, repeated on the server: the driver encodes each time of an array
# through Python datetime arithmetic, about 0.8 us apiece, some 1,200 a scoring batch.
SAME, COUNT = "__same", "__count"  # suffixes of the parameters that carry that time and how many


def one_value(values: list[Any]) -> bool:
    """Do all ``values`` (at least one) hold one value that is not None, which may then travel once?"""
    return values[0] is not None and values.count(values[0]) == len(values)

_JSON, _JSON_TEXT, _TEXT, _TIME, _OTHER = "json", "json text", "text", "time", "other"


def _kind(table: Table, name: str) -> str:
    column_type = table.c[name].type
    if isinstance(column_type, JSON):
        return _JSON
    if isinstance(column_type, JsonText):
        return _JSON_TEXT
    if isinstance(column_type, String | Text):
        return _TEXT
    if isinstance(column_type, UtcDateTime):
        return _TIME
    return _OTHER


def _column_array(table: Table, name: str) -> str:
    """The SQL array of one column's values, as :func:`column_arrays` sends them."""
    kind = _kind(table, name)
    if kind is _JSON:
        return (f"ARRAY(SELECT NULLIF(j.value, CAST('null' AS JSONB)) "
                f"FROM jsonb_array_elements(CAST(:{name} AS JSONB)) WITH ORDINALITY AS j(value, n) ORDER BY j.n)")
    if kind is _TEXT or kind is _JSON_TEXT:  # the joined text, or the array when the values could not be joined
        return text_array(name)
    if kind is _TIME:  # the array, or the one time repeated (COALESCE stops at the first that is there)
        return (f"COALESCE(CAST(:{name} AS TIMESTAMPTZ[]), "
                f"array_fill(CAST(:{name}{SAME} AS TIMESTAMPTZ), ARRAY[CAST(:{name}{COUNT} AS INT)]))")
    return f"CAST(:{name} AS {_array_type(table.c[name].type)})"


def _rows_from(table: Table, names: tuple[str, ...]) -> str:
    arrays = ", ".join(_column_array(table, name) for name in names)
    return f"unnest({arrays}) WITH ORDINALITY AS v({', '.join(_quote(n) for n in names)}, row_number)"


def _quote(name: str) -> str:
    return f'"{name}"'


@lru_cache(maxsize=64)
def insert_text(table: Table, names: tuple[str, ...], ignore_conflicts: bool,
                returning: tuple[str, ...]) -> TextClause:
    """PostgreSQL: ``INSERT INTO table (names) SELECT ... FROM unnest(...)``, its parameters from
    :func:`column_arrays`."""
    columns = ", ".join(_quote(n) for n in names)
    # In the rows' order (ids from a sequence follow it: the outbox relay publishes in id order).
    sql = (f"INSERT INTO {_quote(table.name)} ({columns}) SELECT {columns} FROM {_rows_from(table, names)} "
           "ORDER BY v.row_number")
    if ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(_quote(n) for n in returning)}"
    return text(sql)


@lru_cache(maxsize=64)
def _update_text(table: Table, key: str, names: tuple[str, ...]) -> TextClause:
    sets = ", ".join(f"{_quote(n)} = v.{_quote(n)}" for n in names if n != key)
    return text(f"UPDATE {_quote(table.name)} AS t SET {sets} FROM {_rows_from(table, names)} "
                f"WHERE t.{_quote(key)} = v.{_quote(key)}")
