"""Processed-event ids: inside the consumer's transaction, they turn a redelivery into a no-op.

    async with db.transaction() as conn:
        fresh = await claim_new(conn, "scoring", [e.id for e in batch])
        for event in batch:
            if event.id in fresh: ...apply...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable

from services.db.arrays import text_array, text_array_parameters
from services.db.dialect import insert_ignore
from services.db.models import processed_events
from services.events import utcnow


async def claim_new(conn: AsyncConnection, consumer: str, event_ids: Sequence[str], *,
                    lock_id: int | None = None) -> set[str]:
    """Record ``event_ids`` as processed by ``consumer``; return the ones never seen before.

    Rolls back with the caller's transaction, so an id counts as processed only if its effects committed.
    ``lock_id``: on PostgreSQL, first take that transaction-scoped advisory lock, in the same statement
    (a handler that serialises its batches saves the round trip of a statement of its own; SQLite's one
    writer serialises them already). Nothing is claimed, and no lock taken, for no ids.
    """
    if not event_ids:
        return set()
    return claimed_ids(await conn.execute(*claim_statement(conn, consumer, event_ids, lock_id=lock_id)))


def claim_statement(conn: AsyncConnection, consumer: str, event_ids: Sequence[str], *,
                    lock_id: int | None = None) -> tuple[Executable, Any]:
    """:func:`claim_new`'s statement and parameters (``event_ids`` not empty), built but not sent: for a
    caller that sends it through a pipe (``services.db.pipeline``); :func:`claimed_ids` reads its result."""
    ids = list(dict.fromkeys(event_ids))
    now = utcnow()
    # ON CONFLICT DO NOTHING ... RETURNING answers exactly the ids this transaction claimed: a redelivered
    # id, or one a concurrent member claimed first (it waits for that member's commit), is not returned.
    if conn.dialect.name == "postgresql":
        # One statement with the ids as one array (an executemany is a statement per row on the server).
        if lock_id is not None:
            return _LOCK_THEN_CLAIM_PG, {"consumer": consumer, **text_array_parameters("ids", ids), "at": now,
                                         "lock": lock_id}
        return _CLAIM_PG, {"consumer": consumer, **text_array_parameters("ids", ids), "at": now}
    return (insert_ignore(conn, processed_events).returning(processed_events.c.event_id),
            [{"consumer": consumer, "event_id": i, "processed_at": now} for i in ids])


def claimed_ids(result: Result[Any]) -> set[str]:
    """The ids a :func:`claim_statement` claimed."""
    return set(result.scalars())


_CLAIM_PG = text(
    "INSERT INTO processed_events (consumer, event_id, processed_at) "
    "SELECT CAST(:consumer AS TEXT), e, CAST(:at AS TIMESTAMPTZ) "
    f"FROM unnest({text_array('ids')}) AS e "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)
# The lock is a materialized CTE that the claimed rows join: it is taken before the first row is
# inserted (so before any row lock of the claim), once.
_LOCK_THEN_CLAIM_PG = text(
    "WITH held AS MATERIALIZED (SELECT pg_advisory_xact_lock(CAST(:lock AS BIGINT))) "
    "INSERT INTO processed_events (consumer, event_id, processed_at) "
    "SELECT CAST(:consumer AS TEXT), e, CAST(:at AS TIMESTAMPTZ) "
    f"FROM held, unnest({text_array('ids')}) AS e "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)
