"""What the fault cases assert, as functions of a database snapshot and what the receivers got.

    obs = await observe(database_url)                     # the tables the promises speak about
    score = check_scores(obs, buyers, sender.acked, rules)  # every lead = the rules over what was acked
    crm = check_crm(obs, crm_receiver.requests)             # one Idempotency-Key per assignment
    timers = check_timers(obs, alerts_receiver.requests)    # every due timer fired once, alerted once
    record_figures("kill9", {...})                          # printed, and merged into test-output/faults.json
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from scoring.rules import RuleSet
from services.db.database import Database
from services.db.models import (
    assignments,
    dead_letters,
    deliveries,
    lead_identities,
    leads,
    outbox,
    sla_timers,
    touchpoints,
)
from tests.faults.workload import Buyer, expected_state
from tests.support.polling import eventually
from tests.support.receiver import Received

ROOT = Path(__file__).resolve().parents[2]
FIGURES_PATH = ROOT / "test-output" / "faults.json"
_ALERT_KEY = re.compile(r"^alert:timer-(\d+)(?:-([a-z_]+))?:(\w+)$")


@dataclass
class Observed:
    links: dict[tuple[str, str], str] = field(default_factory=dict)
    leads: dict[str, dict[str, Any]] = field(default_factory=dict)
    touchpoint_ids: set[str] = field(default_factory=set)
    assignments: list[dict[str, Any]] = field(default_factory=list)
    timers: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    outbox: int = 0
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def live(self, lead_id: str | None) -> dict[str, Any] | None:
        seen = set()
        while lead_id is not None and lead_id not in seen:
            seen.add(lead_id)
            row = self.leads.get(lead_id)
            if row is None:
                return None
            if not row["merged_into"]:
                return row
            lead_id = row["merged_into"]
        return None

    def lead_of(self, kind: str, value: str) -> dict[str, Any] | None:
        return self.live(self.links.get((kind, value)))


async def observe(database_url: str, attempts: int = 20) -> Observed:
    """A snapshot of the tables; retried while the database refuses (the PostgreSQL-cut case)."""
    for attempt in range(attempts):
        db = Database(database_url, pool_size=1)
        try:
            return await _observe(db)
        except Exception:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.3)
        finally:
            await db.dispose()
    raise AssertionError("unreachable")


async def _observe(db: Database) -> Observed:
    obs = Observed()
    async with db.read() as conn:
        obs.links = {(k, v): lid for k, v, lid in (await conn.execute(
            select(lead_identities.c.kind, lead_identities.c.value, lead_identities.c.lead_id))).all()}
        for row in (await conn.execute(select(
                leads.c.id, leads.c.stage, leads.c.total, leads.c.fit, leads.c.engagement, leads.c.merged_into,
                leads.c.owner, leads.c.email))).mappings():
            obs.leads[row["id"]] = dict(row)
        obs.touchpoint_ids = set((await conn.execute(select(touchpoints.c.event_id))).scalars())
        obs.assignments = [dict(r) for r in (await conn.execute(select(
            assignments.c.id, assignments.c.lead_id, assignments.c.rep_id, assignments.c.ended_at))).mappings()]
        obs.timers = [dict(r) for r in (await conn.execute(select(
            sla_timers.c.id, sla_timers.c.lead_id, sla_timers.c.assignment_id, sla_timers.c.kind,
            sla_timers.c.status, sla_timers.c.fire_at))).mappings()]
        obs.deliveries = [dict(r) for r in (await conn.execute(select(
            deliveries.c.id, deliveries.c.target, deliveries.c.status, deliveries.c.idempotency_key,
            deliveries.c.attempts, deliveries.c.kind, deliveries.c.last_error, deliveries.c.payload))).mappings()]
        obs.dead_letters = [dict(r) for r in (await conn.execute(select(
            dead_letters.c.id, dead_letters.c.origin, dead_letters.c.topic, dead_letters.c.error,
            dead_letters.c.event_id, dead_letters.c.payload))).mappings()]
        obs.outbox = int((await conn.execute(select(func.count()).select_from(outbox))).scalar_one())
    return obs


async def settle_pipeline(database_url: str, acked_ids: set[str], buyers: Sequence[Buyer],
                          acked: Mapping[str, Sequence[Mapping[str, Any]]], crm: Sequence[Received], *,
                          timers_per_assignment: int = 0, timeout: float = 150) -> Observed | None:
    """Wait until everything acknowledged is scored, every qualified buyer assigned and pushed, nothing
    is pending (outbox, deliveries) and, with ``timers_per_assignment``, every SLA timer fired.
    ``None`` on timeout (the caller then checks a last snapshot and prints the logs)."""
    async def done() -> Observed | None:
        obs = await observe(database_url)
        if not acked_ids <= obs.touchpoint_ids or obs.outbox:
            return None
        assigned = check_assignments(obs, buyers, acked)
        if assigned.assigned_once < assigned.qualified or check_crm(obs, crm).missing:
            return None
        if any(d["status"] == "pending" for d in obs.deliveries):
            return None
        if timers_per_assignment and (len(obs.timers) < timers_per_assignment * len(obs.assignments)
                                      or any(t["status"] == "pending" for t in obs.timers)):
            return None
        return obs

    try:
        result: Observed = await eventually(done, timeout, "the pipeline to settle")
    except AssertionError:
        return None
    return result


# -- the invariants ---------------------------------------------------------------------------------
@dataclass
class ScoreCheck:
    leads_checked: int = 0
    lost_events: list[str] = field(default_factory=list)  # acknowledged, never stored
    wrong_scores: list[str] = field(default_factory=list)
    split_people: list[str] = field(default_factory=list)  # one buyer, two live leads
    over_counted: int = 0
    under_counted: int = 0


def check_scores(obs: Observed, buyers: Sequence[Buyer], acked: Mapping[str, Sequence[Mapping[str, Any]]],
                 rules: RuleSet) -> ScoreCheck:
    """Every buyer's live lead scores exactly the rules over the touchpoints ingest acknowledged."""
    out = ScoreCheck()
    for buyer in buyers:
        sent = acked.get(buyer.key, [])
        if not sent:
            continue
        out.lost_events += [str(t["event_id"]) for t in sent if t["event_id"] not in obs.touchpoint_ids]
        lead = obs.lead_of("email", buyer.email) if any("email" in t for t in sent) else None
        if lead is None and buyer.anonymous_id:
            lead = obs.lead_of("anon", buyer.anonymous_id)
        if lead is None:
            out.wrong_scores.append(f"{buyer.key}: no lead")
            continue
        out.leads_checked += 1
        if buyer.anonymous_id and any("email" in t for t in sent):
            anon = obs.lead_of("anon", buyer.anonymous_id)
            if anon is not None and anon["id"] != lead["id"]:
                out.split_people.append(f"{buyer.key}: email lead {lead['id']} and anon lead {anon['id']}")
        want = rules.score(expected_state(rules, sent), obs.at).total
        if abs(float(lead["total"]) - want) > 1e-6:
            out.wrong_scores.append(f"{buyer.key} ({buyer.kind}): stored {lead['total']}, expected {want}")
            if float(lead["total"]) > want:
                out.over_counted += 1
            else:
                out.under_counted += 1
    return out


@dataclass
class AssignmentCheck:
    qualified: int = 0
    assigned_once: int = 0
    problems: list[str] = field(default_factory=list)
    double_assigned: int = 0


def check_assignments(obs: Observed, buyers: Sequence[Buyer], acked: Mapping[str, Sequence[Any]]) -> AssignmentCheck:
    """Each qualifying buyer (whose demo request was acknowledged) has exactly one assignment, to a rep;
    nobody else has one."""
    out = AssignmentCheck()
    by_lead: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in obs.assignments:
        live = obs.live(row["lead_id"])
        by_lead[live["id"] if live else row["lead_id"]].append(row)
    for buyer in buyers:
        lead = obs.lead_of("email", buyer.email)
        rows = by_lead.get(lead["id"], []) if lead else []
        demo_acked = any(t.get("properties", {}).get("form") == "demo" for t in acked.get(buyer.key, []))
        if buyer.qualifies and demo_acked:
            out.qualified += 1
            if len(rows) == 1 and rows[0]["rep_id"] is not None:
                out.assigned_once += 1
            else:
                out.problems.append(f"{buyer.key}: {len(rows)} assignment(s) {[r['rep_id'] for r in rows]}")
                out.double_assigned += max(0, len(rows) - 1)
        elif rows:
            out.problems.append(f"{buyer.key} ({buyer.kind}, stage {lead and lead['stage']}) was assigned")
    return out


@dataclass
class KeyCheck:
    expected: int = 0  # deliveries that must have arrived (assignments / fired alerts)
    requests: int = 0
    distinct_keys: int = 0
    same_key_repeats: int = 0  # at-least-once: a retried push with the same key
    with_two_keys: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    queued_twice: list[str] = field(default_factory=list)  # one key, two delivery rows: an effect applied twice

    def figures(self) -> dict[str, Any]:
        return {"expected": self.expected, "requests": self.requests, "distinct_keys": self.distinct_keys,
                "same_key_repeats": self.same_key_repeats, "with_two_keys": len(self.with_two_keys),
                "missing": len(self.missing), "unexpected": len(self.unexpected),
                "queued_twice": len(self.queued_twice)}


def check_crm(obs: Observed, received: Sequence[Received]) -> KeyCheck:
    """Every assignment to a rep reached the CRM under exactly one key, ``<lead_id>:<assignment_id>``."""
    out = KeyCheck()
    pushes = [r for r in received if r.method == "POST"]
    out.requests = len(pushes)
    keys_by_assignment: dict[str, set[str]] = defaultdict(set)
    counts = Counter(r.headers.get("idempotency-key", "") for r in pushes)
    for request in pushes:
        assignment_id = request.json()["assignment"]["assignment_id"]
        keys_by_assignment[assignment_id].add(request.headers.get("idempotency-key", ""))
    out.distinct_keys = len(counts)
    out.same_key_repeats = sum(n - 1 for n in counts.values())
    wanted = {a["id"]: a for a in obs.assignments if a["rep_id"] is not None}
    out.expected = len(wanted)
    for assignment_id, row in wanted.items():
        keys = keys_by_assignment.get(assignment_id, set())
        if not keys:
            out.missing.append(assignment_id)
        elif len(keys) > 1:
            out.with_two_keys.append(f"{assignment_id}: {sorted(keys)}")
        elif keys != {f"{row['lead_id']}:{assignment_id}"}:
            live = obs.live(row["lead_id"])
            if not live or keys != {f"{live['id']}:{assignment_id}"}:
                out.with_two_keys.append(f"{assignment_id}: key {sorted(keys)} is not <lead_id>:<assignment_id>")
    out.unexpected = sorted(set(keys_by_assignment) - set(wanted))
    rows = Counter(d["idempotency_key"] for d in obs.deliveries if d["target"] == "crm")
    out.queued_twice = [key for key, n in rows.items() if n > 1]
    return out


@dataclass
class TimerCheck:
    due: int = 0
    fired: int = 0
    not_fired: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)  # assignments whose clock was set up more than once
    alerts: KeyCheck = field(default_factory=KeyCheck)
    alerts_per_timer: dict[int, set[str]] = field(default_factory=dict)


def check_timers(obs: Observed, received: Sequence[Received], *, grace: timedelta = timedelta(seconds=3)
                 ) -> TimerCheck:
    """Every timer due (``fire_at`` + grace in the past) fired; each fired timer reached the alert
    webhook under one key (one per breach action), and no other timer did."""
    out = TimerCheck()
    cutoff = obs.at - grace
    fired = {t["id"]: t for t in obs.timers if t["status"] == "fired"}
    for timer in obs.timers:
        if timer["fire_at"] <= obs.at:
            out.due += 1
            if timer["status"] != "fired" and timer["fire_at"] <= cutoff:
                out.not_fired.append(f"timer {timer['id']} ({timer['kind']}) is {timer['status']}")
    out.fired = len(fired)
    per_assignment = Counter((t["assignment_id"], t["kind"]) for t in obs.timers)
    out.doubled = [f"assignment {a}: {n} {kind} timers" for (a, kind), n in per_assignment.items()
                   if kind == "breach" and n > 1]
    alerts = [r for r in received if r.method == "POST"]
    out.alerts.requests = len(alerts)
    counts = Counter(r.headers.get("idempotency-key", "") for r in alerts)
    out.alerts.distinct_keys = len(counts)
    out.alerts.same_key_repeats = sum(n - 1 for n in counts.values())
    for key in counts:
        match = _ALERT_KEY.match(key)
        if match is None:
            continue  # not a timer's alert (e.g. a dead-letter alert)
        out.alerts_per_timer.setdefault(int(match.group(1)), set()).add(key)
    out.alerts.expected = len(fired)
    for timer_id in fired:
        keys = out.alerts_per_timer.get(timer_id, set())
        if not keys:
            out.alerts.missing.append(f"timer {timer_id}")
        elif len(keys) > 1:
            out.alerts.with_two_keys.append(f"timer {timer_id}: {sorted(keys)}")
    out.alerts.unexpected = [f"timer {t}" for t in out.alerts_per_timer if t not in fired]
    return out


def record_figures(case: str, figures: Mapping[str, Any]) -> None:
    """Print the case's figures (``pytest -s`` shows them) and merge them into test-output/faults.json."""
    print(f"\n[faults] {case}: {json.dumps(figures, default=str)}")
    FIGURES_PATH.parent.mkdir(parents=True, exist_ok=True)
    try:
        existing = json.loads(FIGURES_PATH.read_text())
    except (OSError, ValueError):
        existing = {}
    existing[case] = {**figures, "recorded_at": datetime.now(UTC).isoformat()}
    FIGURES_PATH.write_text(json.dumps(existing, indent=2, default=str, sort_keys=True))
