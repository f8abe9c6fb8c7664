"""Section ``routing``: assignments/s through the real ``RouterHandler`` on PostgreSQL.

Qualifying leads (engaged, fit 20, engagement 60, a mix of countries and shared company domains) are
written straight into ``leads``; then their ``lead.scored`` events (fast-track rule hit) are fed to
``handler.handle(batch)`` in batches of 500, as the consumer runner would: each becomes MQL, then SQL
with an assignment row, a stage history and a ``lead.assigned`` outbox event. The ceiling, measured
in the same run on a fresh database: inserting the same number of ``assignments`` rows in the same
batches, with no logic.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from services.bench import data
from services.bench.context import BenchContext
from services.bench.infra import Unavailable
from services.bench.results import Measurement, median
from services.config import parse_config
from services.db.database import Database
from services.db.models import assignments, leads
from services.events import LEAD_SCORED, Event, LeadScored

SECTION = "routing"
BATCH = 500


def lead_rows(count: int, seed: int = 31) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        domain = f"account{rng.randrange(max(1, count // 3))}.example"
        traits = {"title": "VP Sales", "country": rng.choice(data.COUNTRIES), "email_domain": domain}
        rows.append({"id": uuid.uuid4().hex, "stage": "engaged", "email": f"r{i}@{domain}", "company_domain": domain,
                     "fit": 20.0, "engagement": 60.0, "total": 80.0, "traits": traits, "score_state": {},
                     "source": "website", "created_at": now, "updated_at": now, "stage_changed_at": now,
                     "version": 0})
    return rows


def scored_events(rows: list[dict[str, Any]]) -> list[Event]:
    now = datetime.now(UTC)
    return [Event.new(LEAD_SCORED, source="scoring", key=row["id"], data=LeadScored(
        lead_id=row["id"], stage="engaged", fit=row["fit"], engagement=row["engagement"], total=row["total"],
        traits=row["traits"], company_domain=row["company_domain"], email=row["email"],
        rules_hit=["demo-request"], source="website", scored_at=now).model_dump(mode="json")) for row in rows]


async def _insert(url: str, table: Any, rows: list[dict[str, Any]]) -> float:
    db = Database(url)
    try:
        start = time.perf_counter()
        for i in range(0, len(rows), BATCH):
            async with db.transaction() as conn:
                await conn.execute(table.insert(), rows[i:i + BATCH])
        return time.perf_counter() - start
    finally:
        await db.dispose()


async def through_router(url: str, events: list[Event]) -> tuple[float, int]:
    from router.consumer import RouterHandler

    config = parse_config(data.bench_config("http://127.0.0.1:9/crm"))
    db = Database(url)
    try:
        handler = RouterHandler(db, config)
        start = time.perf_counter()
        for i in range(0, len(events), BATCH):
            await handler.handle(events[i:i + BATCH])
        elapsed = time.perf_counter() - start
        async with db.read() as conn:
            assigned = (await conn.execute(select(func.count()).select_from(assignments)
                                           .where(assignments.c.rep_id.is_not(None)))).scalar_one()
        return elapsed, int(assigned)
    finally:
        await db.dispose()


async def run(ctx: BenchContext) -> None:
    count = 1_000 if ctx.quick else 3_000
    try:
        pg = await ctx.pg()
    except Unavailable as exc:
        ctx.skip(SECTION, "assignments/s, PostgreSQL", "assignments/s", str(exc))
        return
    rates, ceilings, runs = [], [], []
    for run in range(ctx.runs):
        prefix = f"run {run + 1}/{ctx.runs}"
        rows = lead_rows(count, seed=31 + run)
        url = await pg.create_database("bench_routing")
        ctx.say(SECTION, f"{prefix}: {count:,} qualifying leads written; ceiling: {count:,} assignment rows "
                         "bulk-inserted ...")
        ceiling_url = await pg.create_database("bench_routing_ceiling")
        now = datetime.now(UTC)
        ceiling_s = await _insert(ceiling_url, assignments, [
            {"id": str(uuid.uuid4()), "lead_id": r["id"], "rep_id": "anna", "team": "emea",
             "reason": "bench ceiling: no logic", "assigned_at": now} for r in rows])
        await pg.drop(ceiling_url)
        await _insert(url, leads, rows)
        ctx.say(SECTION, f"{prefix}: {count:,} lead.scored events through RouterHandler.handle ...")
        elapsed, assigned = await through_router(url, scored_events(rows))
        await pg.drop(url)
        rate, ceiling = assigned / elapsed, count / ceiling_s
        rates.append(round(rate, 1))
        ceilings.append(round(ceiling, 1))
        runs.append({"assigned": assigned, "leads": count, "router_s": round(elapsed, 3),
                     "ceiling_s": round(ceiling_s, 3)})
        ctx.say(SECTION, f"{prefix}: {rate:,.0f} assignments/s ({assigned:,} of {count:,} leads assigned to a rep; "
                         f"ceiling {ceiling:,.0f} rows/s)")
    ctx.raw(SECTION).update({"runs": runs, "batch": BATCH})
    ctx.add(Measurement(SECTION, "assignments/s, PostgreSQL", median(rates), "assignments/s",
                        ceiling=median(ceilings), ceiling_name="bulk insert", runs=rates, ceiling_runs=ceilings))
