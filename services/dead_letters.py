"""The dead-letter store: what could not be processed, kept with its error until someone replays it.

Dead letters live in the ``dead_letters`` table (``handoff dlq list`` / ``handoff dlq replay``) and, for
bus messages, are also published to the ``dlq`` topic for whoever watches it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.db.models import dead_letters
from services.events import DEAD_LETTER, DLQ, Event, utcnow
from services.outbox import add_events


async def store_dead_letter(
    conn: AsyncConnection,
    *,
    origin: str,
    error: str,
    payload: dict[str, Any],
    topic: str | None = None,
    key: str | None = None,
    event_id: str | None = None,
    delivery_id: int | None = None,
) -> int:
    """Record one dead letter (and announce it on the dlq topic) in the caller's transaction."""
    now = utcnow()
    # What could not be processed may hold what the database cannot store (PostgreSQL refuses NUL in
    # text and JSONB): the store itself must never fail on it, or the consumer would retry it forever.
    try:
        payload = storable(payload)
    except RecursionError:  # nested beyond Python's limit: keep the error, drop the unstorable payload
        payload = {"unstorable": "the payload nests too deep to be stored"}
    error = storable(error)
    topic, key, event_id = storable(topic), storable(key), storable(event_id)
    result = await conn.execute(dead_letters.insert().returning(dead_letters.c.id), [{
        "origin": origin, "topic": topic, "key": key, "event_id": event_id, "payload": payload,
        "error": error[:4000], "created_at": now, "delivery_id": delivery_id,
    }])
    dead_id = int(result.scalar_one())
    await add_events(conn, DLQ, [Event.new(
        DEAD_LETTER, source=origin, key=key or origin,
        data={"dead_letter_id": dead_id, "origin": origin, "topic": topic, "event_id": event_id,
              "error": error[:4000], "payload": payload},
    )])
    return dead_id


def storable(value: Any) -> Any:
    """``value`` with every NUL character (in strings and keys, at any depth) written as ``\\u0000``."""
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000") if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value
