"""The scoring consumer's set-at-a-time statements: a fixed number of statements per batch.

On PostgreSQL each helper is ONE statement whatever the number of rows: the rows travel as one array
per column and ``unnest`` turns them back into rows on the server (an executemany is one statement
per row on the server, and a long ``(kind, value) IN (...)`` list is planned slowly). On SQLite (one
in-process writer, no round trips) the plain SQLAlchemy forms are used::

    links = await find_links(conn, [("email", "jane@acme.com"), ("anon", "a-1")])   # {identity: lead id}
    rows = await lock_leads(conn, ["3f2a...", "9b1c..."])          # FOR UPDATE, id order; with "rev"
    states = await load_states(conn, ["9b1c..."])                  # {lead id: stored score_state}
    await insert_rows(conn, leads, new_rows)
    await update_rows(conn, leads, "id", changed_rows)         # every row has the same keys
    new = await insert_links(conn, link_rows)                  # the (kind, value) pairs really inserted
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import JSON, Float, Integer, Select, String, Table, Text, any_, bindparam, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import TypeEngine

from services.db.dialect import insert_ignore, lock
from services.db.models import lead_identities, leads
from services.db.types import UtcDateTime

Identity = tuple[str, str]  # (kind, value)
Row = Mapping[str, Any]

# What the consumer reads of a lead it is about to change (not the stored breakdown nor the traits:
# both are rebuilt from the score state), and the revision of its score state (see scoring.cache).
LEAD_COLUMNS = ("id", "stage", "email", "source", "campaign", "merged_into", "created_at")
REV = "rev"  # the key of the score state's revision inside the stored JSON
SQLITE_CHUNK = 900  # values per statement: under SQLite's (older) limit of 999 parameters


def _pg(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


async def find_links(conn: AsyncConnection, wanted: Iterable[Identity]) -> dict[Identity, str]:
    """The lead id of each identity in ``wanted`` that is linked already."""
    pairs = list(dict.fromkeys(wanted))
    found: dict[Identity, str] = {}
    if not pairs:
        return found
    if _pg(conn):
        rows = await conn.execute(_FIND_LINKS_PG, {"kinds": [k for k, _ in pairs], "values": [v for _, v in pairs]})
        found.update(((kind, value), lead_id) for kind, value, lead_id in rows)
        return found
    by_kind: dict[str, list[str]] = {}
    for kind, value in pairs:
        by_kind.setdefault(kind, []).append(value)
    # One kind at a time: ``kind = ? AND value IN (...)`` walks the primary key; a list of (kind, value)
    # row values is slower to plan and to run.
    for kind, values in by_kind.items():
        for start in range(0, len(values), SQLITE_CHUNK):
            rows = await conn.execute(select(lead_identities.c.value, lead_identities.c.lead_id).where(
                lead_identities.c.kind == kind, lead_identities.c.value.in_(values[start:start + SQLITE_CHUNK])))
            found.update(((kind, value), lead_id) for value, lead_id in rows)
    return found


_FIND_LINKS_PG = text(
    "SELECT i.kind, i.value, i.lead_id FROM lead_identities AS i "
    "JOIN unnest(CAST(:kinds AS VARCHAR[]), CAST(:values AS VARCHAR[])) AS w(kind, value) "
    "ON i.kind = w.kind AND i.value = w.value"
)


async def lock_leads(conn: AsyncConnection, ids: Sequence[str]) -> list[RowMapping]:
    """The :data:`LEAD_COLUMNS` of these leads and their score state's ``rev`` (None if it has none),
    locked for the transaction in id order (PostgreSQL)."""
    columns = [*(leads.c[name] for name in LEAD_COLUMNS), leads.c.score_state[REV].as_string().label(REV)]
    return await _by_ids(conn, select(*columns), sorted(ids), locked=True)


async def load_states(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Any]:
    """The stored ``score_state`` JSON of these leads."""
    rows = await _by_ids(conn, select(leads.c.id, leads.c.score_state), list(ids), locked=False)
    return {row["id"]: row["score_state"] for row in rows}


async def _by_ids(conn: AsyncConnection, query: Select[Any], ids: list[str], *, locked: bool) -> list[RowMapping]:
    if not ids:
        return []
    if _pg(conn):
        query = query.where(leads.c.id == any_(bindparam("ids", type_=postgresql.ARRAY(String))))
        if locked:
            query = lock(conn, query.order_by(leads.c.id))
        return list((await conn.execute(query, {"ids": ids})).mappings())
    out: list[RowMapping] = []
    for start in range(0, len(ids), SQLITE_CHUNK):  # one writer: nothing to lock
        out += (await conn.execute(query.where(leads.c.id.in_(ids[start:start + SQLITE_CHUNK])))).mappings()
    return out


async def insert_links(conn: AsyncConnection, rows: Sequence[Row]) -> set[Identity]:
    """Insert identity rows unless the identity exists; the (kind, value) pairs this call inserted."""
    if not rows:
        return set()
    if _pg(conn):
        result = await conn.execute(_insert_text(lead_identities, tuple(rows[0]), True, ("kind", "value")),
                                    _arrays(lead_identities, rows))
    else:
        result = await conn.execute(
            insert_ignore(conn, lead_identities).returning(lead_identities.c.kind, lead_identities.c.value), rows)
    return {(kind, value) for kind, value in result}


async def insert_rows(conn: AsyncConnection, table: Table, rows: Sequence[Row], *,
                      ignore_conflicts: bool = False) -> None:
    """Insert ``rows`` (all with the same keys); with ``ignore_conflicts`` an existing key is skipped."""
    if not rows:
        return
    if _pg(conn):
        await conn.execute(_insert_text(table, tuple(rows[0]), ignore_conflicts, ()), _arrays(table, rows))
    else:
        await conn.execute(insert_ignore(conn, table) if ignore_conflicts else table.insert(), rows)


async def update_rows(conn: AsyncConnection, table: Table, key: str, rows: Sequence[Row]) -> None:
    """``UPDATE table SET col = row[col] ... WHERE key = row[key]`` for every row (all with the same keys)."""
    if not rows:
        return
    names = tuple(rows[0])
    if _pg(conn):
        await conn.execute(_update_text(table, key, names), _arrays(table, rows))
        return
    await conn.execute(
        table.update().where(table.c[key] == bindparam(f"b_{key}")).values(
            {name: bindparam(f"b_{name}") for name in names if name != key}),
        [{f"b_{name}": value for name, value in row.items()} for row in rows])


# ---------------------------------------------------------------- PostgreSQL: one array per column
# (Measured against sending all rows as one JSON document for ``jsonb_to_recordset``: that spares
# this process half its encoding time but costs the server more, and was no faster overall.)
def _array_type(column_type: TypeEngine[Any]) -> str:
    if isinstance(column_type, UtcDateTime):
        return "TIMESTAMPTZ[]"
    if isinstance(column_type, JSON):
        return "JSONB[]"
    if isinstance(column_type, Float):
        return "FLOAT8[]"
    if isinstance(column_type, Integer):  # BigInteger too
        return "INT8[]"
    if isinstance(column_type, String | Text):
        return "TEXT[]"
    raise TypeError(f"no array type for {column_type!r}")


def _arrays(table: Table, rows: Sequence[Row]) -> dict[str, list[Any]]:
    """One list per column; JSON values as JSON text (the jsonb[] elements), None as SQL NULL."""
    out: dict[str, list[Any]] = {}
    for name in rows[0]:
        if isinstance(table.c[name].type, JSON):
            out[name] = [None if row[name] is None else
                         orjson.dumps(row[name], option=orjson.OPT_NON_STR_KEYS).decode() for row in rows]
        else:
            out[name] = [row[name] for row in rows]
    return out


def _rows_from(table: Table, names: tuple[str, ...]) -> str:
    arrays = ", ".join(f"CAST(:{name} AS {_array_type(table.c[name].type)})" for name in names)
    return f"unnest({arrays}) WITH ORDINALITY AS v({', '.join(_quote(n) for n in names)}, row_number)"


def _quote(name: str) -> str:
    return f'"{name}"'


@lru_cache(maxsize=64)
def _insert_text(table: Table, names: tuple[str, ...], ignore_conflicts: bool,
                 returning: tuple[str, ...]) -> TextClause:
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
