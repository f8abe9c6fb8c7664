"""Processed-event ids: inside the consumer's transaction, they turn a redelivery into a no-op.

    async with db.transaction() as conn:
        fresh = await claim_new(conn, "scoring", [e.id for e in batch])
        for event in batch:
            if event.id in fresh: ...apply...
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.db.dialect import insert_ignore
from services.db.models import processed_events
from services.events import utcnow


async def claim_new(conn: AsyncConnection, consumer: str, event_ids: Sequence[str]) -> set[str]:
    """Record ``event_ids`` as processed by ``consumer``; return the ones never seen before.

    Rolls back with the caller's transaction, so an id counts as processed only if its effects committed.
    """
    ids = list(dict.fromkeys(event_ids))
    if not ids:
        return set()
    seen = set((await conn.execute(select(processed_events.c.event_id).where(
        processed_events.c.consumer == consumer, processed_events.c.event_id.in_(ids)))).scalars())
    fresh = [i for i in ids if i not in seen]
    if fresh:
        now = utcnow()
        inserted = await conn.execute(
            insert_ignore(conn, processed_events).returning(processed_events.c.event_id),
            [{"consumer": consumer, "event_id": i, "processed_at": now} for i in fresh],
        )
        # A concurrent member may have claimed some in between: only what we inserted is ours.
        return set(inserted.scalars())
    return set()
