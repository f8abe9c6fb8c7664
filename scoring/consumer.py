"""The scoring consumer: one truthful lead per buyer, updated from a batch of touchpoints at a time.

For each poll: ONE transaction claims the event ids (a redelivery is a no-op), resolves identities
(email, user ids, anonymous ids; alias links), merges leads that turn out to be one person, folds the
touchpoints into each lead's score state (``scoring.rules``), stores the timeline, records stage
changes ``anonymous -> known -> engaged``, and queues ``lead.scored`` / ``lead.stage_changed`` /
``lead.merged`` in the outbox. Offsets are committed by the runner after that transaction.

Several scoring consumers may touch one lead (its identities hash to different partitions): lead rows
are locked in id order (PostgreSQL), and a race on a new identity fails on its primary key and is
retried by the runner, after which the identity is found.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from scoring.rules import RuleSet, Score
from scoring.stages import scoring_stage, stage_rank
from scoring.state import LeadScoreState
from services.consumer import Handler
from services.db.database import Database
from services.db.dialect import insert_ignore, lock
from services.db.models import lead_identities, lead_merges, leads, score_history, stage_history, touchpoints
from services.events import (
    LEAD_EVENTS,
    LEAD_MERGED,
    LEAD_SCORED,
    LEAD_STAGE_CHANGED,
    TOUCHPOINTS,
    Event,
    LeadScored,
    Touchpoint,
    utcnow,
)
from services.idempotency import claim_new
from services.outbox import add_events

Identity = tuple[str, str]  # (kind, value): ("email", "jane@acme.com"), ("user", "u1"), ("anon", "a-1")


def identities_of(tp: Touchpoint) -> list[Identity]:
    out: list[Identity] = []
    if tp.email:
        out.append(("email", tp.email))
    if tp.user_id:
        out.append(("user", tp.user_id))
    if tp.anonymous_id:
        out.append(("anon", tp.anonymous_id))
    if tp.previous_id:  # alias: the previous id was an anonymous id or an earlier user id
        out += [("anon", tp.previous_id), ("user", tp.previous_id)]
    return out


@dataclass
class LeadWork:
    """A lead's row as loaded (or created) in this batch, changed in memory, written once at the end."""

    id: str
    stage: str
    state: LeadScoreState
    created_at: datetime
    is_new: bool
    source: str | None = None
    campaign: str | None = None
    email: str | None = None
    known: bool = False
    merged_into: str | None = None
    original_stage: str | None = None
    new_touchpoints: list[dict[str, Any]] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)


class ScoringHandler(Handler):
    group = "scoring"
    topics = (TOUCHPOINTS,)

    def __init__(self, db: Database, rules: RuleSet) -> None:
        self.db = db
        self.rules = rules

    async def handle(self, events: list[Event]) -> None:
        parsed = [Touchpoint.model_validate(e.data) for e in events]  # a malformed one is dead-lettered
        async with self.db.transaction() as conn:
            fresh = await claim_new(conn, self.group, [e.id for e in events])
            todo = [tp for e, tp in zip(events, parsed, strict=True) if e.id in fresh]
            if todo:
                await _Batch(conn, self.rules).apply(todo)


class _Batch:
    def __init__(self, conn: AsyncConnection, rules: RuleSet) -> None:
        self.conn = conn
        self.rules = rules
        self.now = utcnow()
        self.links: dict[Identity, str] = {}  # identity -> lead id (loaded + created in this batch)
        self.new_links: dict[Identity, str] = {}
        self.leads: dict[str, LeadWork] = {}
        self.merges: list[tuple[str, str]] = []  # (winner, loser)
        self.out_events: list[Event] = []

    async def apply(self, todo: list[Touchpoint]) -> None:
        wanted = {i for tp in todo for i in identities_of(tp)}
        await self._load_links(wanted)
        for tp in todo:
            lead = await self._resolve(tp)
            lead.new_touchpoints.append(tp.model_dump(mode="json"))
            if tp.email and not lead.email:
                lead.email = tp.email
            if tp.email or tp.user_id:
                lead.known = True
        await self._write()

    # -- identity -------------------------------------------------------------------------------
    async def _load_links(self, wanted: Iterable[Identity]) -> None:
        wanted = list(wanted)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            rows = await self.conn.execute(select(
                lead_identities.c.kind, lead_identities.c.value, lead_identities.c.lead_id
            ).where(tuple_(lead_identities.c.kind, lead_identities.c.value).in_(chunk)))
            for kind, value, lead_id in rows:
                self.links[(kind, value)] = lead_id
        ids = sorted(set(self.links.values()))
        await self._load_leads(ids)

    async def _load_leads(self, ids: list[str]) -> None:
        ids = [i for i in ids if i not in self.leads]
        if not ids:
            return
        rows = (await self.conn.execute(lock(self.conn, select(leads).where(leads.c.id.in_(ids))
                                             .order_by(leads.c.id)))).mappings().all()
        for row in rows:
            self.leads[row["id"]] = LeadWork(
                id=row["id"], stage=row["stage"], state=LeadScoreState.from_json(row["score_state"]),
                created_at=row["created_at"], is_new=False, source=row["source"], campaign=row["campaign"],
                email=row["email"], known=row["stage"] != "anonymous", merged_into=row["merged_into"],
                original_stage=row["stage"])
        # Leads merged away earlier: follow them to the survivor.
        for lead_id in ids:
            work = self.leads.get(lead_id)
            if work is not None and work.merged_into and work.merged_into not in self.leads:
                await self._load_leads([work.merged_into])

    def _live(self, lead_id: str) -> LeadWork:
        work = self.leads[lead_id]
        while work.merged_into is not None:
            work = self.leads[work.merged_into]
        return work

    async def _resolve(self, tp: Touchpoint) -> LeadWork:
        ids = [i for i in identities_of(tp)]
        found = {self._live(self.links[i]).id for i in ids if i in self.links}
        if tp.previous_id:  # only the previous id's kind that exists links; do not invent both
            ids = [i for i in ids if i[1] != tp.previous_id or i in self.links] or ids[:1]
            if ("anon", tp.previous_id) not in self.links and ("user", tp.previous_id) not in self.links:
                ids.append(("anon", tp.previous_id))
        if not found:
            lead = LeadWork(id=uuid.uuid4().hex, stage="anonymous", state=LeadScoreState.empty(),
                            created_at=self.now, is_new=True, source=tp.source, campaign=tp.campaign,
                            original_stage=None)
            self.leads[lead.id] = lead
        elif len(found) == 1:
            lead = self.leads[found.pop()]
        else:
            lead = self._merge([self.leads[i] for i in sorted(found)], tp)
        for identity in ids:
            if identity not in self.links:
                self.links[identity] = lead.id
                self.new_links[identity] = lead.id
        return lead

    def _merge(self, group: list[LeadWork], tp: Touchpoint) -> LeadWork:
        """Several leads are one person: the most advanced (then the oldest) keeps everything."""
        group.sort(key=lambda w: (-stage_rank(w.stage), w.created_at, w.id))
        winner, losers = group[0], group[1:]
        for loser in losers:
            winner.state = self.rules.merge(winner.state, loser.state)
            winner.known = winner.known or loser.known
            winner.email = winner.email or loser.email
            if loser.created_at < winner.created_at:
                winner.source, winner.campaign = loser.source or winner.source, loser.campaign or winner.campaign
            loser.merged_into = winner.id
            winner.new_touchpoints += loser.new_touchpoints
            loser.new_touchpoints = []
            self.merges.append((winner.id, loser.id))
            winner.causes.append(f"merged with lead {loser.id} ({tp.type} {tp.event_id} linked their identities)")
        return winner

    # -- writing --------------------------------------------------------------------------------
    async def _write(self) -> None:
        conn, now = self.conn, self.now
        for winner, loser in self.merges:
            await conn.execute(update(lead_identities).where(lead_identities.c.lead_id == loser)
                               .values(lead_id=winner))
            await conn.execute(update(touchpoints).where(touchpoints.c.lead_id == loser).values(lead_id=winner))
            await conn.execute(lead_merges.insert().values(winner_id=winner, loser_id=loser, at=now,
                                                           reason=f"identities linked at {now.isoformat()}"))
            self.out_events.append(Event.new(LEAD_MERGED, source="scoring", key=winner,
                                             data={"winner_id": winner, "loser_id": loser, "at": now.isoformat()}))
        tp_rows, history, inserts, updates = [], [], [], []
        for work in self.leads.values():
            if work.merged_into is not None:
                if not work.is_new and work.original_stage is not None:
                    updates.append(self._row(work))
                elif work.is_new:
                    inserts.append(self._row(work))
                continue
            if not work.new_touchpoints and not work.causes:
                continue
            work.state = self.rules.apply_many(work.state, work.new_touchpoints)
            for tp in work.new_touchpoints:
                tp_rows.append({"event_id": tp["event_id"], "lead_id": work.id, "type": tp["type"],
                                "occurred_at": datetime.fromisoformat(tp["occurred_at"]), "source": tp["source"],
                                "campaign": tp.get("campaign"), "payload": tp})
            before = work.stage
            work.stage = scoring_stage(work.stage, work.known, work.state.has_positive_engagement)
            if before != work.stage or work.is_new:
                history.append({"lead_id": work.id, "from_stage": None if work.is_new else before,
                                "to_stage": work.stage, "at": now,
                                "cause": _stage_cause(before, work.stage, work.new_touchpoints, work.is_new)})
                if not work.is_new or work.stage != "anonymous":
                    self.out_events.append(Event.new(LEAD_STAGE_CHANGED, source="scoring", key=work.id, data={
                        "lead_id": work.id, "from": before, "to": work.stage, "at": now.isoformat()}))
            score = self.rules.score(work.state, now)
            (inserts if work.is_new else updates).append(self._row(work, score))
            if work.causes:
                await conn.execute(score_history.insert().values(
                    lead_id=work.id, at=now, fit=score.fit, engagement=score.engagement, total=score.total,
                    cause="; ".join(work.causes)[:2000]))
            first = work.new_touchpoints[-1] if work.new_touchpoints else {}
            self.out_events.append(Event.new(LEAD_SCORED, source="scoring", key=work.id, data=LeadScored(
                lead_id=work.id, stage=work.stage, fit=score.fit, engagement=score.engagement, total=score.total,
                traits=dict(work.state.traits), company_domain=work.state.company_domain, email=work.email,
                rules_hit=sorted(score.rules_hit), source=work.source or first.get("source"),
                campaign=work.campaign, scored_at=now).model_dump(mode="json")))
        if inserts:
            await conn.execute(leads.insert(), inserts)
        if updates:
            await conn.execute(
                update(leads).where(leads.c.id == bindparam("b_id")).values(
                    {c: bindparam(f"b_{c}") for c in updates[0] if c != "id"}),
                [{f"b_{k}": v for k, v in row.items()} for row in updates])
        if self.new_links:
            inserted = await conn.execute(
                insert_ignore(conn, lead_identities).returning(lead_identities.c.kind, lead_identities.c.value), [
                    {"kind": k, "value": v, "lead_id": self._live(lead_id).id, "linked_at": now}
                    for (k, v), lead_id in self.new_links.items()])
            raced = set(self.new_links) - {(k, v) for k, v in inserted}
            if raced:
                await self._check_links(sorted(raced))
        if tp_rows:
            await conn.execute(insert_ignore(conn, touchpoints), tp_rows)
        if history:
            await conn.execute(stage_history.insert(), history)
        await add_events(conn, LEAD_EVENTS, self.out_events)

    async def _check_links(self, pairs: list[Identity]) -> None:
        """Identities we meant to create already existed: a concurrent consumer linked them first. If it
        linked them to another lead, this batch is wrong: fail it; the retry sees (and merges) that lead."""
        rows = await self.conn.execute(select(lead_identities.c.kind, lead_identities.c.value,
                                              lead_identities.c.lead_id).where(
            tuple_(lead_identities.c.kind, lead_identities.c.value).in_(pairs)))
        for kind, value, lead_id in rows:
            if lead_id != self._live(self.new_links[(kind, value)]).id:
                raise IdentityRace(f"identity {kind}:{value} was linked to lead {lead_id} concurrently")

    def _row(self, work: LeadWork, score: Score | None = None) -> dict[str, Any]:
        score = score or self.rules.score(work.state, self.now)
        row = {
            "id": work.id, "stage": work.stage, "email": work.email,
            "company_domain": work.state.company_domain, "fit": score.fit, "engagement": score.engagement,
            "total": score.total, "traits": dict(work.state.traits), "score_state": work.state.to_json(),
            "score": score.to_json(),
            "source": work.source, "campaign": work.campaign, "merged_into": work.merged_into,
            "updated_at": self.now,
        }
        if work.is_new:
            row |= {"created_at": work.created_at, "stage_changed_at": self.now, "version": 0}
        return row


class IdentityRace(RuntimeError):
    """Two consumers linked one identity to two leads at once; the batch is retried."""


def _stage_cause(before: str, after: str, tps: list[dict[str, Any]], is_new: bool) -> str:
    last = tps[-1] if tps else {}
    what = f"{last.get('type', '?')} {last.get('event_id', '')} from {last.get('source', '?')}".strip()
    if is_new:
        return f"first touchpoint: {what}"
    if after == "known":
        return f"identified by {what}"
    if after == "engaged":
        return f"first engagement points from {what}"
    return f"{before} -> {after} by {what}"
