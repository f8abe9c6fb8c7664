"""Section ``report``: the funnel report on PostgreSQL with 100,000 leads (``--quick``: 10,000).

The leads, their stage history, assignments, SLA clocks and sales feedback are generated with a
realistic funnel (most leads stay anonymous/known/engaged; a few percent reach MQL, SQL, contact,
opportunity, won or lost; some are recycled or disqualified) over the last 90 days, and COPYed in.
Then ``services.reports.funnel_report`` is timed, as ``GET /v1/reports/funnel`` runs it on PostgreSQL
(independent queries side by side on pooled connections), over 20 calls each without ``group_by`` and
with ``group_by=source`` and ``rep`` (one untimed call first). Goal: under 200 ms (the median).
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.dialects import postgresql

from services.bench import data
from services.bench.context import BenchContext
from services.bench.infra import Unavailable, plain_dsn
from services.bench.results import Goal, Measurement, percentile
from services.config import parse_config
from services.db.database import Database
from services.stage_chain import chain_update

SECTION = "report"
CALLS = 20
GOAL = Goal("value", "<", 200)
FUNNEL = ("anonymous", "known", "engaged", "mql", "sql", "contacted", "opportunity", "won")
FINAL = {"anonymous": 0.22, "known": 0.18, "engaged": 0.26, "mql": 0.04, "sql": 0.04, "contacted": 0.05,
         "opportunity": 0.04, "won": 0.03, "lost": 0.04, "recycled": 0.06, "disqualified": 0.04}
# Typical time to the next stage, in hours (exponential): speed-to-lead is minutes, deals take weeks.
GAP_HOURS = {"known": 12, "engaged": 48, "mql": 72, "sql": 0.01, "contacted": 2, "opportunity": 96,
             "won": 400, "lost": 300, "recycled": 24, "disqualified": 24}
REPS = {"anna": "emea", "ben": "emea", "carl": "default", "dana": "default"}
SOURCES = ("website", "website", "website", "segment", "hubspot", "mautic")
CAMPAIGNS = (None, "q4-webinar", "spring-guide", "retargeting", "newsletter", "partner")
REJECT_REASONS = ("budget", "no authority", "timing", "competitor", "not a fit")

LEAD_COLUMNS = ("id", "stage", "email", "company_domain", "fit", "engagement", "total", "traits", "score_state",
                "source", "campaign", "owner", "team", "merged_into", "created_at", "updated_at",
                "stage_changed_at", "qualified_at", "assigned_at", "contacted_at", "version")
HISTORY_COLUMNS = ("lead_id", "from_stage", "to_stage", "at", "cause")
ASSIGNMENT_COLUMNS = ("id", "lead_id", "rep_id", "team", "reason", "assigned_at", "ended_at", "end_reason")
SLA_COLUMNS = ("lead_id", "assignment_id", "rep_id", "due_at", "state", "reminders_sent", "breached_at", "paged",
               "started_at", "stopped_at")
FEEDBACK_COLUMNS = ("lead_id", "type", "rep_id", "reason", "at", "channel")


def path_to(final: str, rng: random.Random) -> list[str]:
    """The stages a lead went through to ``final`` (a third never were anonymous: identified at once)."""
    if final in FUNNEL:
        path = list(FUNNEL[:FUNNEL.index(final) + 1])
    elif final == "lost":
        path = [*FUNNEL[:rng.choice((6, 7))], "lost"]
    elif final == "recycled":
        path = [*FUNNEL[:rng.choice((5, 6))], "recycled"]
    else:
        path = [*FUNNEL[:3], "disqualified"]
    if len(path) > 1 and path[0] == "anonymous" and rng.random() < 0.33:
        path = path[1:]
    return path


def generate(count: int, now: datetime, seed: int = 41) -> dict[str, list[tuple[Any, ...]]]:
    """Rows for every table, as tuples in the column orders above."""
    rng = random.Random(seed)
    stages, weights = list(FINAL), list(FINAL.values())
    out: dict[str, list[tuple[Any, ...]]] = {"leads": [], "stage_history": [], "assignments": [], "lead_sla": [],
                                             "feedback": []}
    empty = "{}"
    for i in range(count):
        lead_id = uuid.uuid4().hex
        path = path_to(rng.choices(stages, weights)[0], rng)
        created = now - timedelta(days=rng.uniform(0, 90))
        at = created
        times = {}
        for n, stage in enumerate(path):
            if n:
                at = min(now, at + timedelta(hours=rng.expovariate(1 / GAP_HOURS[stage])))
            times[stage] = at
            out["stage_history"].append((lead_id, path[n - 1] if n else None, stage, at,
                                         f"bench: {path[n - 1]} -> {stage}" if n else "first touchpoint"))
        rep = team = assignment_id = None
        if "sql" in path:
            rep = rng.choice(list(REPS))
            team = REPS[rep]
            assignment_id = str(uuid.uuid4())
            out["assignments"].append((assignment_id, lead_id, rep, team, f"{team} rotation", times["sql"], None,
                                       None))
            due = times["sql"] + timedelta(hours=4)
            contacted = times.get("contacted")
            breached: datetime | None
            stopped: datetime | None
            if contacted is not None:
                state, breached, stopped = ("met" if contacted <= due else "breached"), None, contacted
                if state == "breached":
                    breached = due
                out["feedback"].append((lead_id, "contacted", rep, None, contacted, "api"))
            elif "recycled" in times:
                state, breached, stopped = "stopped", None, times["recycled"]
            else:
                state, breached, stopped = ("running", None, None) if due > now else ("breached", due, None)
            out["lead_sla"].append((lead_id, assignment_id, rep, due, state, 2 if state == "breached" else 0,
                                    breached, False, times["sql"], stopped))
            for stage, kind in (("opportunity", "accepted"), ("won", "won"), ("lost", "lost")):
                if stage in times:
                    out["feedback"].append((lead_id, kind, rep, None, times[stage], "crm:webhook"))
            if "recycled" in times:
                out["feedback"].append((lead_id, "rejected", rep, rng.choice(REJECT_REASONS), times["recycled"],
                                        "api"))
        final = path[-1]
        known = final != "anonymous"
        domain = f"company{rng.randrange(count // 4 + 1)}.com"
        fit, engagement = float(rng.choice((-15, 0, 10, 20, 30))), float(rng.randrange(0, 120))
        out["leads"].append((
            lead_id, final, f"l{i}@{domain}" if known else None, domain if known else None, fit, engagement,
            fit + engagement, empty, empty, rng.choice(SOURCES), rng.choice(CAMPAIGNS), rep, team, None,
            created, times[final], times[final], times.get("mql"), times.get("sql"), times.get("contacted"), 0))
    return out


async def fill(url: str, rows: dict[str, list[tuple[Any, ...]]]) -> float:
    """COPY every table's rows in; derive the stage chain; VACUUM ANALYZE; seconds taken."""
    import asyncpg

    columns = {"leads": LEAD_COLUMNS, "stage_history": HISTORY_COLUMNS, "assignments": ASSIGNMENT_COLUMNS,
               "lead_sla": SLA_COLUMNS, "feedback": FEEDBACK_COLUMNS}
    start = time.perf_counter()
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        for table, records in rows.items():
            await conn.copy_records_to_table(table, records=records, columns=list(columns[table]))
        # What the services derive on write for every history row they insert (COPY bypasses them).
        await conn.execute(str(chain_update("postgresql").compile(
            dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})))
        # VACUUM as autovacuum would have by then: the visibility map lets the report's scans be index-only.
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - start


async def run(ctx: BenchContext) -> None:
    from services.reports import funnel_report

    count = 10_000 if ctx.quick else 100_000
    try:
        pg = await ctx.pg()
    except Unavailable as exc:
        for variant in ("no group_by", "group_by=source", "group_by=rep"):
            ctx.skip(SECTION, f"funnel p50, {count:,} leads, {variant}", "ms", str(exc), GOAL)
        return
    now = datetime.now(UTC)
    ctx.say(SECTION, f"generating {count:,} leads with stage history, assignments, SLA clocks and feedback")
    rows = generate(count, now)
    url = await pg.create_database("bench_report")
    ctx.say(SECTION, "COPY into PostgreSQL: " + ", ".join(f"{len(v):,} {k}" for k, v in rows.items()))
    fill_s = await fill(url, rows)
    ctx.say(SECTION, f"filled and analysed in {fill_s:.1f}s")
    config = parse_config(data.bench_config("http://127.0.0.1:9/crm"))
    db = Database(url)
    raw: dict[str, Any] = {"leads": count, "rows": {k: len(v) for k, v in rows.items()}, "fill_s": round(fill_s, 2)}
    try:
        for group_by in (None, "source", "rep"):
            variant = f"group_by={group_by}" if group_by else "no group_by"
            times = []
            for call in range(CALLS + 1):
                async with db.read() as conn:
                    t0 = time.perf_counter()
                    report = await funnel_report(conn, config, start=now - timedelta(days=120), end=None,
                                                 group_by=group_by, now=now, connect=db.read)
                    elapsed = (time.perf_counter() - t0) * 1000
                if call:  # the first call warms the connection and the statement cache
                    times.append(round(elapsed, 2))
            p50, p95 = percentile(times, 0.5), percentile(times, 0.95)
            ctx.say(SECTION, f"funnel report, {variant}: p50 {p50:,.0f} ms, p95 {p95:,.0f} ms over {CALLS} calls "
                             f"({len(report.get('groups', []))} groups)")
            raw[variant] = {"times_ms": times, "p50_ms": p50, "p95_ms": p95}
            ctx.add(Measurement(SECTION, f"funnel p50, {count:,} leads, {variant}", p50, "ms", goal=GOAL, runs=times))
            ctx.add(Measurement(SECTION, f"funnel p95, {count:,} leads, {variant}", p95, "ms"))
    finally:
        await db.dispose()
        await pg.drop(url)
    ctx.raw(SECTION).update(raw)
