"""``handoff rescore``: recompute every lead's score from its stored touchpoints under the current rules.

    handoff rescore                              # apply: writes scores, score history, lead.scored events
    handoff rescore --dry-run --config NEW.yaml  # preview a rule change; writes nothing

The preview says how many leads would enter or leave MQL (per current stage) and lists the largest
score movers with the rules that moved them. Applying records every changed score in
``score_history`` (cause ``rescore``) and emits ``lead.scored`` so the router re-evaluates them
(a lead that now qualifies is routed; an assigned lead is never un-assigned).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from scoring.rules import RuleSet, Score
from scoring.stages import scoring_stage
from scoring.state import LeadScoreState
from services.config import HandoffConfig, load_config
from services.db.database import Database
from services.db.models import leads, score_history, touchpoints
from services.events import LEAD_EVENTS, LEAD_SCORED, Event, LeadScored, utcnow
from services.outbox import add_events
from services.qualification import is_disqualified, meets_mql
from services.settings import Settings

PAGE = 500


@dataclass
class Mover:
    lead_id: str
    email: str | None
    stage: str
    before: float
    after: float
    reasons: list[str]


@dataclass
class RescoreReport:
    leads: int = 0
    changed: int = 0
    enter_mql: Counter[str] = field(default_factory=Counter)  # per current stage
    leave_mql: Counter[str] = field(default_factory=Counter)
    movers: list[Mover] = field(default_factory=list)


def _by_rule(score: Score) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for line in score.breakdown:
        totals[line.rule] += line.decayed_points
    return totals


def reasons(old: Score, new: Score) -> list[str]:
    before, after = _by_rule(old), _by_rule(new)
    out = []
    for rule in sorted(set(before) | set(after), key=lambda r: -abs(after.get(r, 0) - before.get(r, 0))):
        delta = after.get(rule, 0.0) - before.get(rule, 0.0)
        if abs(delta) >= 0.005:
            out.append(f"{rule} {delta:+.1f}")
    return out


async def _pages(db: Database) -> AsyncIterator[tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]]:
    last = ""
    while True:
        async with db.read() as conn:
            rows = [dict(r) for r in (await conn.execute(
                select(leads).where(leads.c.merged_into.is_(None), leads.c.id > last)
                .order_by(leads.c.id).limit(PAGE))).mappings().all()]
            if not rows:
                return
            tps: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for lead_id, payload in (await conn.execute(
                    select(touchpoints.c.lead_id, touchpoints.c.payload)
                    .where(touchpoints.c.lead_id.in_([r["id"] for r in rows])))).all():
                tps[lead_id].append(payload)
        yield rows, tps
        last = rows[-1]["id"]


async def rescore(db: Database, current: HandoffConfig, new: HandoffConfig, *, dry_run: bool, top: int = 10,
                  now: datetime | None = None, progress: bool = True) -> RescoreReport:
    now = now or utcnow()
    old_rules, new_rules = RuleSet.from_config(current.scoring), RuleSet.from_config(new.scoring)
    report = RescoreReport()
    async with db.read() as conn:
        total = len((await conn.execute(select(leads.c.id).where(leads.c.merged_into.is_(None)))).all())
    async for rows, tps in _pages(db):
        writes, events = [], []
        for row in rows:
            report.leads += 1
            old_state = LeadScoreState.from_json(row["score_state"])
            state = new_rules.apply_many(LeadScoreState.empty(), tps.get(row["id"], []))
            old, fresh = old_rules.score(old_state, now), new_rules.score(state, now)
            lead_view = {"traits": dict(state.traits), "email": row["email"]}
            was = meets_mql(old.fit, old.engagement, old.rules_hit, current.qualification)
            will = meets_mql(fresh.fit, fresh.engagement, fresh.rules_hit, new.qualification) \
                and not is_disqualified(lead_view, new.qualification)
            if will and not was:
                report.enter_mql[row["stage"]] += 1
            elif was and not will:
                report.leave_mql[row["stage"]] += 1
            if abs(fresh.total - old.total) >= 0.005:
                report.changed += 1
                report.movers.append(Mover(row["id"], row["email"], row["stage"], old.total, fresh.total,
                                           reasons(old, fresh)))
                stage = scoring_stage(row["stage"], row["stage"] != "anonymous", state.has_positive_engagement)
                writes.append((row, state, fresh, stage))
        if not dry_run and writes:
            async with db.transaction() as conn:
                for row, state, fresh, stage in writes:
                    await conn.execute(update(leads).where(leads.c.id == row["id"]).values(
                        fit=fresh.fit, engagement=fresh.engagement, total=fresh.total, score=fresh.to_json(),
                        score_state=state.to_json(), traits=dict(state.traits),
                        company_domain=state.company_domain, stage=stage, updated_at=now))
                    await conn.execute(score_history.insert().values(
                        lead_id=row["id"], at=now, fit=fresh.fit, engagement=fresh.engagement, total=fresh.total,
                        cause="rescore: rules changed"))
                    events.append(Event.new(LEAD_SCORED, source="scoring/rescore", key=row["id"], data=LeadScored(
                        lead_id=row["id"], stage=stage, fit=fresh.fit, engagement=fresh.engagement,
                        total=fresh.total, traits=dict(state.traits), company_domain=state.company_domain,
                        email=row["email"], rules_hit=sorted(fresh.rules_hit), source=row["source"],
                        campaign=row["campaign"], scored_at=now).model_dump(mode="json")))
                await add_events(conn, LEAD_EVENTS, events)
        if progress and total:
            print(f"  rescored {report.leads}/{total} leads ({100 * report.leads // total}%)", file=sys.stderr)
    report.movers.sort(key=lambda m: -abs(m.after - m.before))
    report.movers = report.movers[:top]
    return report


def print_report(report: RescoreReport, dry_run: bool) -> None:
    verb = "would" if dry_run else "did"
    print(f"{report.leads} leads rescored; {report.changed} {verb} change score")
    print(f"enter MQL: {sum(report.enter_mql.values())}   leave MQL: {sum(report.leave_mql.values())}")
    for stage in sorted(set(report.enter_mql) | set(report.leave_mql)):
        print(f"  {stage:14} +{report.enter_mql[stage]:<6} -{report.leave_mql[stage]}")
    if report.movers:
        print("largest movers:")
        for m in report.movers:
            print(f"  {m.lead_id}  {m.email or '(anonymous)':32} {m.stage:12} "
                  f"{m.before:8.1f} -> {m.after:8.1f}  {', '.join(m.reasons) or '-'}")
    if not dry_run and report.changed:
        print("scores written; lead.scored events queued for the router")


def rescore_command(args: argparse.Namespace, settings: Settings) -> int:
    current = load_config(settings.config_path())
    new = load_config(Path(args.rescore_config)) if args.rescore_config else current
    try:
        RuleSet.from_config(new.scoring)
    except ValueError as exc:
        print(f"the new rules cannot be used: {exc}", file=sys.stderr)
        return 2
    if args.rescore_config and not args.dry_run:
        print("to apply new rules, deploy the config; --config is for previews (add --dry-run)", file=sys.stderr)
        return 2

    async def main() -> RescoreReport:
        db = Database(settings.database_url)
        try:
            return await rescore(db, current, new, dry_run=args.dry_run, top=args.top)
        finally:
            await db.dispose()

    print_report(asyncio.run(main()), args.dry_run)
    return 0
