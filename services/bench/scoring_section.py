"""Section ``scoring``: touchpoints/s through the real ``ScoringHandler``, beside a bulk insert.

Pre-generated touchpoint events (buyers that start anonymous, identify, and go on by e-mail; the
example config's rules) are fed straight to ``handler.handle(batch)`` in batches of 500, as the
consumer runner would after a poll, on SQLite and on PostgreSQL. The ceiling, measured in the same
run on a fresh database of the same kind: inserting the same touchpoint rows (the lead timeline) in
the same batches and transactions, with no logic at all. Both are timed with the garbage collector
tuned as the served process tunes it (``services.serve.tune_gc``): otherwise every full collection
would also walk this section's own pre-generated input (some 100,000 objects no consumer holds).
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from services.bench import data
from services.bench.context import BenchContext
from services.bench.infra import SqliteFiles, Unavailable
from services.bench.results import Goal, Measurement, median
from services.config import parse_config
from services.db.database import Database
from services.db.models import leads, touchpoints
from services.events import Event
from services.serve import tune_gc

SECTION = "scoring"
BATCH = 500
GOAL_PG = Goal("value", ">=", 5_000)
GOAL_PG_RATIO = Goal("ratio", ">=", 0.3)


def make_events(count: int, tag: str) -> list[Event]:
    """``count`` touchpoint events as ingest publishes them (normalised, keyed by identity)."""
    from ingest.schemas import to_touchpoints
    from ingest.writer import to_event

    now = datetime.now(UTC)
    stream = data.People(seed=23, tag=tag).stream(count)
    events = []
    for i in range(0, len(stream), BATCH):
        wire = [to_event(tp) for tp in to_touchpoints({"touchpoints": stream[i:i + BATCH]}, "website", now,
                                                      batch=True)]
        events += [Event.from_wire(e.key, e.value(), e.headers()) for e in wire]  # as the consumer gets them
    return events


def timeline_rows(events: list[Event]) -> list[dict[str, Any]]:
    """The ``touchpoints`` rows of those events (one lead id per buyer identity), for the ceiling."""
    lead_of: dict[str, str] = {}
    rows = []
    for event in events:
        tp = event.data
        who = tp.get("email") or tp.get("anonymous_id") or event.key
        lead_id = lead_of.setdefault(who, uuid.uuid4().hex)
        rows.append({"event_id": tp["event_id"], "lead_id": lead_id, "type": tp["type"],
                     "occurred_at": datetime.fromisoformat(tp["occurred_at"]), "source": tp["source"],
                     "campaign": tp.get("campaign"), "payload": tp})
    return rows


async def bulk_insert(url: str, rows: list[dict[str, Any]]) -> float:
    """Seconds to insert ``rows`` into ``touchpoints``, ``BATCH`` per transaction, no logic."""
    db = Database(url)
    try:
        start = time.perf_counter()
        for i in range(0, len(rows), BATCH):
            async with db.transaction() as conn:
                await conn.execute(touchpoints.insert(), rows[i:i + BATCH])
        return time.perf_counter() - start
    finally:
        await db.dispose()


async def through_handler(url: str, events: list[Event]) -> tuple[float, dict[str, int]]:
    """Seconds for the real handler to apply ``events`` in batches; and what it left in the database."""
    from scoring.consumer import ScoringHandler
    from scoring.rules import RuleSet

    config = parse_config(data.bench_config("http://127.0.0.1:9/crm"))
    db = Database(url)
    try:
        handler = ScoringHandler(db, RuleSet.from_config(config.scoring))
        start = time.perf_counter()
        for i in range(0, len(events), BATCH):
            await handler.handle(events[i:i + BATCH])
        elapsed = time.perf_counter() - start
        async with db.read() as conn:
            stored = (await conn.execute(select(func.count()).select_from(touchpoints))).scalar_one()
            lead_count = (await conn.execute(select(func.count()).select_from(leads))).scalar_one()
        return elapsed, {"touchpoints_stored": int(stored), "leads": int(lead_count)}
    finally:
        await db.dispose()


async def run(ctx: BenchContext) -> None:
    count = 2_000 if ctx.quick else 20_000
    ctx.say(SECTION, f"generating {count:,} touchpoint events (anonymous visits, identify, e-mail journeys)")
    events = make_events(count, ctx.tag())
    rows = timeline_rows(events)
    buyers = len({e.key for e in events})
    ctx.raw(SECTION).update({"events": len(events), "identity_keys": buyers, "batch": BATCH})
    sqlite = SqliteFiles(ctx.workdir)
    for backend in ("sqlite", "postgresql"):
        label = "SQLite" if backend == "sqlite" else "PostgreSQL"
        try:
            if backend == "postgresql":
                await ctx.pg()
        except Unavailable as exc:
            ctx.skip(SECTION, f"touchpoints/s, {label}", "tp/s", str(exc), GOAL_PG)
            continue
        rates, ceilings, runs = [], [], []
        for run in range(ctx.runs):
            prefix = f"run {run + 1}/{ctx.runs}, {label}"
            ceiling_url = await _fresh(ctx, sqlite, backend)
            ctx.say(SECTION, f"{prefix}: bulk insert of the same {len(rows):,} timeline rows (ceiling) ...")
            with gc_as_served():
                ceiling_s = await bulk_insert(ceiling_url, rows)
            await _drop(ctx, sqlite, backend, ceiling_url)
            url = await _fresh(ctx, sqlite, backend)
            ctx.say(SECTION, f"{prefix}: {len(events):,} events through ScoringHandler.handle, {BATCH} per batch ...")
            with gc_as_served():
                handler_s, stored = await through_handler(url, events)
            await _drop(ctx, sqlite, backend, url)
            rate, ceiling = len(events) / handler_s, len(rows) / ceiling_s
            rates.append(round(rate, 1))
            ceilings.append(round(ceiling, 1))
            runs.append({"handler_s": round(handler_s, 3), "ceiling_s": round(ceiling_s, 3), **stored})
            ctx.say(SECTION, f"{prefix}: {rate:,.0f} tp/s (ceiling {ceiling:,.0f} rows/s); "
                             f"{stored['leads']:,} leads, {stored['touchpoints_stored']:,} timeline rows")
        ctx.raw(SECTION)[backend] = runs
        ctx.add(Measurement(SECTION, f"touchpoints/s, {label}", median(rates), "tp/s", ceiling=median(ceilings),
                            ceiling_name="bulk insert", goal=GOAL_PG if backend == "postgresql" else None,
                            runs=rates, ceiling_runs=ceilings))
        if backend == "postgresql":
            ctx.add(Measurement(SECTION, "ratio to bulk insert, PostgreSQL", median(rates), "tp/s",
                                ceiling=median(ceilings), ceiling_name="bulk insert", goal=GOAL_PG_RATIO,
                                runs=rates, ceiling_runs=ceilings))


@contextmanager
def gc_as_served() -> Iterator[None]:
    """The collector as ``handoff serve`` sets it up (what exists now frozen, rarer young collections)
    for the block, then as it was: the bench runs the handler in its own process."""
    threshold = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def _fresh(ctx: BenchContext, sqlite: SqliteFiles, backend: str) -> str:
    if backend == "sqlite":
        return await sqlite.create("scoring")
    return await (await ctx.pg()).create_database("bench_scoring")


async def _drop(ctx: BenchContext, sqlite: SqliteFiles, backend: str, url: str) -> None:
    if backend == "sqlite":
        sqlite.remove(url)
    else:
        await (await ctx.pg()).drop(url)
