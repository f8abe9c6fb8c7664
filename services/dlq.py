"""``handoff dlq list`` and ``handoff dlq replay [ID...]``: inspect and re-drive dead letters.

Two kinds live in ``dead_letters``: events a consumer could not process (origin ``consumer:<group>``;
replay re-publishes the same event, with its id, through the outbox, so the consumer tries again) and
outbound deliveries that failed for good (origin ``delivery:<target>``; replay puts the delivery back
in the queue with a fresh retry budget). A malformed message (not a CloudEvent) cannot be replayed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.db.database import Database
from services.db.models import dead_letters, deliveries
from services.events import Event, utcnow
from services.outbox import add_events
from services.settings import Settings


async def list_dead_letters(db: Database, include_replayed: bool = False, limit: int = 200) -> list[dict[str, Any]]:
    query = select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
    if not include_replayed:
        query = query.where(dead_letters.c.replayed_at.is_(None))
    async with db.read() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings().all()]


async def replay(db: Database, ids: list[int] | None = None) -> list[tuple[int, str]]:
    """Replay the given dead letters (all pending ones when ``ids`` is empty); (id, what happened) each."""
    outcomes: list[tuple[int, str]] = []
    async with db.transaction() as conn:
        query = select(dead_letters).where(dead_letters.c.replayed_at.is_(None)).order_by(dead_letters.c.id)
        if ids:
            query = select(dead_letters).where(dead_letters.c.id.in_(ids)).order_by(dead_letters.c.id)
        rows = (await conn.execute(query)).mappings().all()
        found = {r["id"] for r in rows}
        outcomes += [(i, "not found") for i in (ids or []) if i not in found]
        for row in rows:
            outcomes.append((row["id"], await _replay_one(conn, row)))
    return outcomes


async def _replay_one(conn: AsyncConnection, row: Any) -> str:
    if row["replayed_at"] is not None:
        return f"already replayed at {row['replayed_at'].isoformat()}"
    now = utcnow()
    if row["delivery_id"] is not None:
        result = await conn.execute(update(deliveries).where(
            deliveries.c.id == row["delivery_id"], deliveries.c.status == "dead",
        ).values(status="pending", attempts=0, next_attempt_at=now, last_error=None))
        if not result.rowcount:
            return "delivery is no longer dead (already replayed?)"
        what = f"delivery {row['delivery_id']} back in the {row['origin'].removeprefix('delivery:')} queue"
    else:
        try:
            event = Event.model_validate(row["payload"])
        except ValueError:
            return "not replayable: the message was malformed (no CloudEvent); fix the producer"
        if not row["topic"]:
            return "not replayable: the topic is unknown"
        await add_events(conn, row["topic"], [event])
        what = f"event {event.id} re-published to {row['topic']}"
    await conn.execute(update(dead_letters).where(dead_letters.c.id == row["id"]).values(replayed_at=now))
    return what


def dlq_command(args: argparse.Namespace, settings: Settings) -> int:
    async def main() -> int:
        db = Database(settings.database_url)
        try:
            if args.dlq_command == "list":
                rows = await list_dead_letters(db, include_replayed=args.all)
                _print_list(rows, as_json=args.json)
                return 0
            outcomes = await replay(db, list(args.ids))
            if not outcomes:
                print("no dead letters to replay")
            for dead_id, what in outcomes:
                print(f"{dead_id}: {what}")
            return 1 if any(w == "not found" or w.startswith("not replayable") for _, w in outcomes) else 0
        finally:
            await db.dispose()

    return asyncio.run(main())


def _print_list(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))
        return
    if not rows:
        print("no dead letters")
        return
    print(f"{'id':>6}  {'created':20}  {'origin':24}  {'event/key':40}  error")
    for r in rows:
        created = r["created_at"].strftime("%Y-%m-%d %H:%M:%S")
        ident = (r["event_id"] or r["key"] or "")[:40]
        replayed = " (replayed)" if r["replayed_at"] else ""
        print(f"{r['id']:>6}  {created:20}  {r['origin'][:24]:24}  {ident:40}  {r['error'][:100]}{replayed}")
