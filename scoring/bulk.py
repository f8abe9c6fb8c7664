"""The scoring consumer's set-at-a-time statements: a fixed number of statements per batch.

On PostgreSQL each helper is ONE statement whatever the number of rows: the rows travel as one array
per column and ``unnest`` turns them back into rows on the server (an executemany is one statement
per row on the server, and a long ``(kind, value) IN (...)`` list is planned slowly). On SQLite (one
in-process writer, no round trips) the plain SQLAlchemy forms are used::

    links = await find_links(conn, [("email", "jane@acme.com"), ("anon", "a-1")])   # {identity: lead id}
    rows = await lock_leads(conn, ["3f2a...", "9b1c..."])          # FOR UPDATE, id order; with "rev"
    states = await load_states(conn, ["9b1c..."])                  # {lead id: stored score_state}
    new = await insert_links(conn, link_rows)                  # the (kind, value) pairs really inserted

Plain inserts and updates of many rows are :mod:`services.db.arrays`'s ``insert_rows`` and ``update_rows``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, String, any_, bindparam, func, literal, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Result, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable

from services.db.arrays import column_arrays, insert_text, text_array, text_array_parameters
from services.db.dialect import insert_ignore, lock
from services.db.models import lead_identities, leads

Identity = tuple[str, str]  # (kind, value)
Row = Mapping[str, Any]

# What the consumer reads of a lead it is about to change (not the stored breakdown nor the traits:
# both are rebuilt from the score state), and the revision of its score state (see scoring.cache).
LEAD_COLUMNS = ("id", "stage", "email", "source", "campaign", "merged_into", "created_at", "stage_changed_at")
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
        rows = await conn.execute(_FIND_LINKS_PG, text_array_parameters("kinds", [k for k, _ in pairs])
                                  | text_array_parameters("values", [v for _, v in pairs]))
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
    f"JOIN unnest({text_array('kinds')}, {text_array('values')}) AS w(kind, value) "
    "ON i.kind = w.kind AND i.value = w.value"
)


async def lock_leads(conn: AsyncConnection, ids: Sequence[str]) -> list[RowMapping]:
    """The :data:`LEAD_COLUMNS` of these leads and their score state's ``rev`` (None if it has none),
    locked for the transaction in id order (PostgreSQL)."""
    columns = [*(leads.c[name] for name in LEAD_COLUMNS), _stored_rev(conn).label(REV)]
    return await _by_ids(conn, select(*columns), sorted(ids), locked=True)


def _stored_rev(conn: AsyncConnection) -> ColumnElement[Any]:
    """The ``rev`` of a stored score state (JSON text), without parsing it: :func:`with_rev` writes it as the
    first key (``{"rev":"...",``); a state stored otherwise (another writer) has none here, and is parsed."""
    if _pg(conn):
        return func.substring(leads.c.score_state, literal(_REV_AT_START))
    return func.json_extract(leads.c.score_state, f"$.{REV}")


def with_rev(stored_state: Mapping[str, Any], rev: str) -> dict[str, Any]:
    """A score state's stored JSON with ``rev`` as its first key, where :func:`lock_leads` reads it back
    from the stored text's start (orjson keeps the keys' order)."""
    return {REV: rev, **stored_state}


# The rev as :func:`with_rev` writes it, first: the regular expression ^\{"rev":"([^"\\]*)"
_REV_AT_START = '^\\{"' + REV + '":"([^"\\\\]*)"'


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
    return linked_pairs(await conn.execute(*link_statement(conn, rows)))


def link_statement(conn: AsyncConnection, rows: Sequence[Row]) -> tuple[Executable, Any]:
    """:func:`insert_links`'s statement and parameters (``rows`` not empty); :func:`linked_pairs` reads its
    result."""
    if _pg(conn):
        statement: Executable = insert_text(lead_identities, tuple(rows[0]), True, ("kind", "value"))
        return statement, column_arrays(lead_identities, rows)
    table = lead_identities.c
    return insert_ignore(conn, lead_identities).returning(table.kind, table.value), list(rows)


def linked_pairs(result: Result[Any]) -> set[Identity]:
    """The (kind, value) pairs a :func:`link_statement` inserted."""
    return {(row["kind"], row["value"]) for row in result.mappings()}
