"""The scoring consumer: one truthful lead per buyer, updated from a batch of touchpoints at a time.

For each poll: ONE transaction claims the event ids (a redelivery is a no-op), resolves identities
(email, user ids, anonymous ids; alias links), merges leads that turn out to be one person, folds the
touchpoints into each lead's score state (``scoring.rules``), stores the timeline, records stage
changes ``anonymous -> known -> engaged``, and queues ``lead.scored`` / ``lead.stage_changed`` /
``lead.merged`` in the outbox. Offsets are committed by the runner after that transaction. The claim
travels with the writes (in the timeline's statement on PostgreSQL); a batch holding an id claimed
before is rolled back and applied again with only its new events (redeliveries are rare; claiming
first would make every batch wait for it).

Several scoring consumers may touch one lead (its identities hash to different partitions): lead rows
are locked in id order (PostgreSQL), and a race on a new identity fails on its primary key and is
retried by the runner, after which the identity is found.

A batch costs a fixed number of statements whatever its size (``scoring.bulk``: one statement per
table on PostgreSQL; the lead rows in a few slices, each slice's lead rows, stage moves and events in
one statement), sent through a pipe (``services.db.pipeline``) so that the database writes one while
the next is built here. The score states this consumer stored recently are reused rather than parsed
again when the stored revision says they are still current (``scoring.cache``).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import update
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection

from scoring.bulk import REV, find_links, link_statement, linked_pairs, load_states, lock_leads, with_rev
from scoring.cache import DEFAULT_MAX_LEADS, StateCache
from scoring.rules import RuleSet, Score
from scoring.stages import engagement_can_move, scoring_stage, stage_rank
from scoring.state import LeadScoreState, plain_dict
from scoring.touchpoints import touchpoint_dicts
from services.consumer import Handler
from services.db.arrays import Statement, combined_statements, insert_statement, update_statement
from services.db.database import Database
from services.db.models import (
    lead_identities,
    lead_merges,
    leads,
    outbox,
    score_history,
    stage_history,
    touchpoints,
)
from services.db.pipeline import StatementPipe
from services.events import (
    LEAD_EVENTS,
    LEAD_MERGED,
    LEAD_SCORED,
    LEAD_STAGE_CHANGED,
    TOUCHPOINTS,
    Event,
    utcnow,
)
from services.idempotency import claim_new, claim_statement, claimed_ids
from services.lead_store import stage_move
from services.outbox import mark_queued
from services.stage_chain import first_move_top, stage_chain_texts, stage_chain_updates

Identity = tuple[str, str]  # (kind, value): ("email", "jane@acme.com"), ("user", "u1"), ("anon", "a-1")

_TIME = TypeAdapter(datetime)
Sent = asyncio.Future[Result[Any]]  # a statement sent through the pipe: its result, once it is done


def identities_of(tp: Mapping[str, Any]) -> list[Identity]:
    """The identities a touchpoint (a :func:`scoring.touchpoints.touchpoint_dicts` dict) names."""
    out: list[Identity] = []
    if email := tp["email"]:
        out.append(("email", email))
    if user_id := tp["user_id"]:
        out.append(("user", user_id))
    if anonymous_id := tp["anonymous_id"]:
        out.append(("anon", anonymous_id))
    if previous_id := tp["previous_id"]:  # alias: the previous id was an anonymous id or an earlier user id
        out += [("anon", previous_id), ("user", previous_id)]
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
    stage_changed_at: datetime | None = None  # as loaded; the batch's time once this batch moves it
    new_touchpoints: list[dict[str, Any]] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)


class ScoringHandler(Handler):
    group = "scoring"
    topics = (TOUCHPOINTS,)

    def __init__(self, db: Database, rules: RuleSet, *, cache_leads: int = DEFAULT_MAX_LEADS) -> None:
        self.db = db
        self.rules = rules
        self.states = StateCache(cache_leads)  # the score states this consumer stored lately

    async def handle(self, events: list[Event]) -> None:
        if not events:
            return
        # A malformed touchpoint fails the batch; the runner splits it and dead-letters that one.
        parsed = touchpoint_dicts([e.data for e in events])
        ids = [e.id for e in events]
        # Almost every batch is new: apply it and claim its ids in the same pipe, so that the database
        # records the claim while this process folds (the claim is one of the batch's slowest
        # statements). If any id had been handled before, that transaction is rolled back, and the
        # batch is applied again the careful way: claim first, then only what is new.
        try:
            async with self.db.transaction() as conn:
                await _Batch(conn, self.rules, self.states).apply(parsed, claim=(self.group, ids))
            return
        except _SeenBefore:
            pass
        async with self.db.transaction() as conn:
            fresh = await claim_new(conn, self.group, ids)
            todo = [tp for e, tp in zip(events, parsed, strict=True) if e.id in fresh]
            if todo:
                await _Batch(conn, self.rules, self.states).apply(todo)


class _SeenBefore(Exception):
    """Some of the batch's event ids were claimed before: roll back and apply only the new ones."""


class _Batch:
    def __init__(self, conn: AsyncConnection, rules: RuleSet, states: StateCache) -> None:
        self.conn = conn
        self.rules = rules
        self.states = states
        self.now = utcnow()
        self.now_text = _TIME.dump_python(self.now, mode="json")  # as the event models write times
        self.links: dict[Identity, str] = {}  # identity -> lead id (loaded + created in this batch)
        self.new_links: dict[Identity, str] = {}
        self.leads: dict[str, LeadWork] = {}
        self.merges: list[tuple[str, str]] = []  # (winner, loser)
        self.outbox_rows: list[dict[str, Any]] = []
        self.event_ids = _uuid4_texts()

    async def apply(self, todo: list[dict[str, Any]], *, claim: tuple[str, list[str]] | None = None) -> None:
        """Fold ``todo`` into its leads and write everything. With ``claim`` (consumer group, event ids)
        the ids are claimed on the way, and :class:`_SeenBefore` raised unless every one was new."""
        self.links = await find_links(self.conn, [i for tp in todo for i in identities_of(tp)])
        await self._load_leads(set(self.links.values()))
        async with StatementPipe(self.conn) as pipe:
            for tp in todo:
                lead = self._resolve(tp)
                lead.new_touchpoints.append(tp)
                if (email := tp["email"]) and not lead.email:
                    lead.email = email
                if email or tp["user_id"]:
                    lead.known = True
            claimed, links = await self._write(pipe, claim_statement(self.conn, *claim) if claim else None)
        if claim is not None and (claimed is None or claimed_ids(await claimed) != set(claim[1])):
            raise _SeenBefore
        if links is not None:
            raced = set(self.new_links) - linked_pairs(await links)
            if raced:
                await self._check_links(sorted(raced))

    # -- identity -------------------------------------------------------------------------------
    async def _load_leads(self, ids: set[str]) -> None:
        """Load (and lock) these leads and, hop by hop, the leads they were merged into."""
        while ids := {i for i in ids if i not in self.leads}:
            rows = await lock_leads(self.conn, sorted(ids))
            states: dict[str, LeadScoreState] = {}
            for row in rows:
                cached = self.states.get(row["id"], row[REV])
                if cached is not None:
                    states[row["id"]] = cached
            stored = await load_states(self.conn, [row["id"] for row in rows if row["id"] not in states])
            states |= {lead_id: LeadScoreState.from_json(raw) for lead_id, raw in stored.items()}
            for row in rows:
                self.leads[row["id"]] = LeadWork(
                    id=row["id"], stage=row["stage"], state=states[row["id"]],
                    created_at=row["created_at"], is_new=False, source=row["source"], campaign=row["campaign"],
                    email=row["email"], known=row["stage"] != "anonymous", merged_into=row["merged_into"],
                    original_stage=row["stage"], stage_changed_at=row["stage_changed_at"])
            ids = {row["merged_into"] for row in rows if row["merged_into"]}  # merged away: on to the survivor

    def _live(self, lead_id: str) -> LeadWork:
        work = self.leads[lead_id]
        while work.merged_into is not None:
            work = self.leads[work.merged_into]
        return work

    def _resolve(self, tp: dict[str, Any]) -> LeadWork:
        ids = identities_of(tp)
        found = {self._live(self.links[i]).id for i in ids if i in self.links}
        if previous_id := tp["previous_id"]:  # only the previous id's kind that exists links; not both
            ids = [i for i in ids if i[1] != previous_id or i in self.links] or ids[:1]
            if ("anon", previous_id) not in self.links and ("user", previous_id) not in self.links:
                ids.append(("anon", previous_id))
        if not found:
            lead = LeadWork(id=uuid.uuid4().hex, stage="anonymous", state=LeadScoreState.empty(),
                            created_at=self.now, is_new=True, source=tp["source"], campaign=tp["campaign"],
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

    def _merge(self, group: list[LeadWork], tp: dict[str, Any]) -> LeadWork:
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
            winner.causes.append(f"merged with lead {loser.id} ({tp['type']} {tp['event_id']} linked their identities)")
        return winner

    # -- writing --------------------------------------------------------------------------------
    async def _write(self, pipe: StatementPipe, claim: Statement | None) -> tuple[Sent | None, Sent | None]:
        """Send the batch's statements, with ``claim`` (the claim of its event ids) if given; the claim's
        result and the identity links' result (to check for races), when they were sent."""
        # Through a pipe: the server applies each statement while the next one's rows are built here.
        # The new identity links and the timeline go first (known before any lead is folded; the
        # links, cheap to build, while the timeline's JSON is encoded), then the leads in a few
        # slices, each slice's rows sent while the next slice is folded.
        conn, now = self.conn, self.now
        for winner, loser in self.merges:
            await pipe.send(update(lead_identities).where(lead_identities.c.lead_id == loser)
                            .values(lead_id=winner))
            await pipe.send(update(touchpoints).where(touchpoints.c.lead_id == loser).values(lead_id=winner))
            await pipe.send(lead_merges.insert().values(winner_id=winner, loser_id=loser, at=now,
                                                        reason=f"identities linked at {now.isoformat()}"))
            self._emit(LEAD_MERGED, winner, {"winner_id": winner, "loser_id": loser, "at": now.isoformat()})
        links = None
        if self.new_links:  # in (kind, value) order: two consumers linking the same two never deadlock
            links = await pipe.send(*link_statement(conn, [
                {"kind": k, "value": v, "lead_id": self._live(lead_id).id, "linked_at": now}
                for (k, v), lead_id in sorted(self.new_links.items())]))
        # The claim goes with the timeline (one statement on PostgreSQL), written by the server while the
        # first slice of leads is folded.
        tp_rows = self._timeline_rows()
        writes = [claim] if claim is not None else []
        if tp_rows:
            writes.append(insert_statement(conn, touchpoints, tp_rows, ignore_conflicts=True))
        sent = [await pipe.send(statement, parameters)
                for statement, parameters in combined_statements(conn, writes, result_of=0)]
        claimed = sent[0] if claim is not None else None  # the claim's result is the first statement's
        score_rows: list[dict[str, Any]] = []
        moved: set[str] = set()  # existing leads whose stage moved: their stage chain is refreshed
        # New leads last: their first history row is their whole chain, so a last slice of new leads only
        # can carry the refresh of the earlier slices' moves in its own statement (PostgreSQL), and
        # nothing is left to send once the last fold is done.
        parts = list(_slices(sorted(self.leads.values(), key=_is_new)))
        for index, part in enumerate(parts):
            history: list[dict[str, Any]] = []
            inserts, updates = self._fold(part, history, score_rows)
            moved_here = {str(row["lead_id"]) for row in history if row["top"] is None}
            # The slice's lead rows, stage moves and events: one statement on PostgreSQL, written by the
            # server while the next slice is folded (the pipe holds one statement: each one more sent
            # here would be waited for with nothing to do).
            writes = []
            if inserts:
                writes.append(insert_statement(conn, leads, inserts))
            if updates:
                writes.append(update_statement(conn, leads, "id", updates))
            if history:  # a row per new or moved lead
                writes.append(insert_statement(conn, stage_history, history))
            if self.outbox_rows:
                writes.append(insert_statement(conn, outbox, self.outbox_rows))
                self.outbox_rows = []
                mark_queued(conn)
            if moved and not moved_here and index == len(parts) - 1 and conn.dialect.name == "postgresql":
                writes += stage_chain_texts(moved)  # the earlier slices' moves, written by earlier statements
                moved = set()
            moved |= moved_here
            for statement, parameters in combined_statements(conn, writes):
                await pipe.send(statement, parameters)
        if score_rows:
            await pipe.send(score_history.insert(), score_rows)
        for statement, parameters in stage_chain_updates(conn.dialect.name, moved):
            await pipe.send(statement, parameters)
        return claimed, links

    def _timeline_rows(self) -> list[dict[str, Any]]:
        """The ``touchpoints`` rows of this batch, each under the lead it resolved to."""
        rows = []
        for work in self.leads.values():
            if work.merged_into is None:
                rows += [{"event_id": tp["event_id"], "lead_id": work.id, "type": tp["type"],
                          "occurred_at": _aware(tp["occurred_at"]), "source": tp["source"],
                          "campaign": tp.get("campaign"), "payload": tp} for tp in work.new_touchpoints]
        return rows

    def _fold(self, works: list[LeadWork], history: list[dict[str, Any]],
              score_rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Fold each changed lead's new touchpoints into its state; record its stage move and score row
        (appended to ``history`` and ``score_rows``), queue its events; its lead row to insert or update."""
        now = self.now
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for work in works:
            if work.merged_into is not None:
                if not work.is_new and work.original_stage is not None:
                    updates.append(self._row(work))
                elif work.is_new:
                    inserts.append(self._row(work))
                continue
            if not work.new_touchpoints and not work.causes:
                continue
            work.state = self.rules.apply_many(work.state, work.new_touchpoints)
            before = work.stage
            earned = engagement_can_move(work.stage, work.known) and work.state.has_positive_engagement
            work.stage = scoring_stage(work.stage, work.known, earned)
            if before != work.stage or work.is_new:
                moved, history_row = stage_move(
                    work.id, None if work.is_new else before, work.stage, at=now,
                    cause=_stage_cause(before, work.stage, work.new_touchpoints, work.is_new))
                work.stage_changed_at = moved["stage_changed_at"]
                # A new lead's first row is its whole chain (no refresh needed); others get it refreshed.
                history_row["top"] = first_move_top(work.stage) if work.is_new else None
                history.append(history_row)
                if not work.is_new or work.stage != "anonymous":
                    self._emit(LEAD_STAGE_CHANGED, work.id, {
                        "lead_id": work.id, "from": before, "to": work.stage, "at": now.isoformat()})
            score = self.rules.score(work.state, now, engagement_lines=False)
            (inserts if work.is_new else updates).append(self._row(work, score))
            if work.causes:
                score_rows.append({"lead_id": work.id, "at": now, "fit": score.fit, "engagement": score.engagement,
                                   "total": score.total, "cause": "; ".join(work.causes)[:2000]})
            last = work.new_touchpoints[-1] if work.new_touchpoints else {}
            self._emit(LEAD_SCORED, work.id, self._scored(work, score, last.get("source")))
        return inserts, updates

    def _emit(self, type_: str, key: str, data: dict[str, Any]) -> None:
        """Queue an event on lead-events: its outbox row, as ``add_events`` would write it (without an
        ``Event`` model per row: hundreds per batch, all built right here)."""
        self.outbox_rows.append({"topic": LEAD_EVENTS, "key": key, "event_id": next(self.event_ids), "type": type_,
                                 "source": "scoring", "time": self.now, "data": data})

    def _scored(self, work: LeadWork, score: Score, fallback_source: str | None) -> dict[str, Any]:
        """``LeadScored(...).model_dump(mode="json")``, built directly (one per lead and batch)."""
        return {
            "lead_id": work.id, "stage": work.stage, "fit": float(score.fit),
            "engagement": float(score.engagement), "total": float(score.total),
            "traits": plain_dict(work.state.traits), "company_domain": work.state.company_domain, "email": work.email,
            "rules_hit": sorted(score.rules_hit), "source": work.source or fallback_source,
            "campaign": work.campaign, "scored_at": self.now_text,
        }

    async def _check_links(self, pairs: list[Identity]) -> None:
        """Identities we meant to create already existed: a concurrent consumer linked them first. If it
        linked them to another lead, this batch is wrong: fail it; the retry sees (and merges) that lead."""
        for (kind, value), lead_id in (await find_links(self.conn, pairs)).items():
            if lead_id != self._live(self.new_links[(kind, value)]).id:
                raise IdentityRace(f"identity {kind}:{value} was linked to lead {lead_id} concurrently")

    def _row(self, work: LeadWork, score: Score | None = None) -> dict[str, Any]:
        score = score or self.rules.score(work.state, self.now, engagement_lines=False)
        if work.merged_into is None:
            rev = self.states.new_rev()
            stored_state = with_rev(work.state.to_json(), rev)  # read back without parsing the state
            self.states.put(work.id, rev, work.state)
        else:
            stored_state = work.state.to_json()
            self.states.forget(work.id)
        row = {
            "id": work.id, "stage": work.stage, "email": work.email,
            "company_domain": work.state.company_domain, "fit": score.fit, "engagement": score.engagement,
            "total": score.total, "traits": plain_dict(work.state.traits), "score_state": stored_state,
            "score": score.stored_json(self.now_text),
            "source": work.source, "campaign": work.campaign, "merged_into": work.merged_into,
            "updated_at": self.now,
            # Unchanged unless this batch moved the lead: an update row carries it either way (one
            # statement for every lead), and an index entry is only rewritten when its value changes.
            "stage_changed_at": work.stage_changed_at or self.now,
        }
        if work.is_new:
            row |= {"created_at": work.created_at, "version": 0}
        return row


# Leads are folded in slices of these shares of the batch's leads, each slice's writes sent while the
# next is folded: the first slice's fold hides the timeline insert, and the last slice is the smallest,
# since what it sends is waited for with nothing left to fold. (Four equal slices measured best of 1 to
# 8 equal ones; with the slices' writes in one statement each, these shares: 3,157 -> 3,221 tp/s on the
# bench's batches, medians of four interleaved pairs, and the process busy 0.76 -> 0.79 of the time.)
FOLD_SHARES = (0.3, 0.3, 0.25, 0.15)
MIN_SLICE = 32  # leads: fewer are not worth a statement of their own


def _slices(items: list[LeadWork], shares: tuple[float, ...] = FOLD_SHARES) -> Iterator[list[LeadWork]]:
    """``items`` in consecutive slices of about these shares (fewer slices when there are few items)."""
    start = 0
    for share in shares[:-1]:
        size = max(MIN_SLICE, round(len(items) * share))
        if start + size >= len(items):
            break
        yield items[start:start + size]
        start += size
    if start < len(items):
        yield items[start:]


def _is_new(work: LeadWork) -> bool:
    return work.is_new


def _uuid4_texts(chunk: int = 256) -> Iterator[str]:
    """Random (version 4) UUIDs as text, like ``str(uuid.uuid4())`` but a few at a time from the OS's
    random source (a batch emits hundreds of events; ``uuid4()`` one by one was a visible cost)."""
    while True:
        raw = bytearray(os.urandom(16 * chunk))
        for i in range(0, len(raw), 16):
            raw[i + 6] = raw[i + 6] & 0x0F | 0x40  # version 4
            raw[i + 8] = raw[i + 8] & 0x3F | 0x80  # RFC 4122 variant
        text = raw.hex()
        for i in range(0, len(text), 32):
            h = text[i:i + 32]
            yield f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _aware(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:  # the touchpoint model keeps a naive time naive; the database wants UTC
        raise ValueError(f"touchpoint time {text!r} has no UTC offset; send times such as 2026-11-22T10:00:00Z")
    return at


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
