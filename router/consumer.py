"""The router consumer: qualifies scored leads (MQL) and hands them to a rep (SQL), atomically.

Consumes ``lead-events``: ``lead.scored`` (qualify, then assign) and ``lead.reassign_requested`` (the
SLA breached: assign again without the breached rep). Each batch is ONE transaction: the processed
ids, the stage changes, the assignment rows, the shared rotation cursors and the outgoing
``lead.assigned`` events (outbox) commit together, so a redelivered event changes nothing and a lead
is assigned at most once, even with several routers: every assignment runs under one lock (PostgreSQL: a
transaction-scoped advisory lock; SQLite has a single writer), under which the open-lead counts and
cursors are read and written.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Integer, Select, String, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from router.assign import Decision, RepState, Router, RoutingState
from router.qualify import Qualifier
from router.writes import BatchWrites
from services.config import HandoffConfig
from services.consumer import Handler
from services.db.database import Database
from services.db.models import OPEN_OWNED_WHERE, account_owners, assignments, leads, rep_state, routing_cursors
from services.db.types import JsonType
from services.events import (
    LEAD_ASSIGNED,
    LEAD_EVENTS,
    LEAD_REASSIGN_REQUESTED,
    LEAD_SCORED,
    Event,
    LeadAssigned,
    LeadScored,
    ReassignRequested,
    new_id,
    utcnow,
)
from services.idempotency import claim_new
from services.rep_loads import open_lead_counts

log = logging.getLogger(__name__)
ROUTING_LOCK_ID = 74190004  # the advisory lock every assignment takes first (PostgreSQL)
# What routing reads of a lead (not its score state and breakdown: large JSON it never needs).
ROW_COLUMNS = (leads.c.id, leads.c.stage, leads.c.owner, leads.c.merged_into, leads.c.fit, leads.c.engagement,
               leads.c.total, leads.c.traits, leads.c.email, leads.c.company_domain)
ACCOUNT_OWNER = "account_owner"  # read with the lead (account-based routing): its account's owner, if any

# Every rep's open leads, the reps' overrides and the rotation cursors, in one round trip (PostgreSQL):
# three reads were three round trips on every batch that assigns. The count is services.rep_loads'
# (the partial index's own condition as literal SQL, so that a generic plan uses ix_leads_open_owner).
_ROUTING_STATE_PG = text(
    "SELECT 'load' AS kind, owner AS key, count(*) AS open_leads, CAST(NULL AS BOOLEAN) AS available, "
    "CAST(NULL AS INTEGER) AS capacity, CAST(NULL AS JSONB) AS cursor "
    f"FROM leads WHERE {OPEN_OWNED_WHERE} AND owner = ANY(CAST(:reps AS VARCHAR[])) GROUP BY owner "
    "UNION ALL SELECT 'rep', rep_id, NULL, available, capacity, NULL FROM rep_state "
    "UNION ALL SELECT 'cursor', team, NULL, NULL, NULL, cursor FROM routing_cursors"
).columns(kind=String, key=String, open_leads=Integer, available=Boolean, capacity=Integer, cursor=JsonType)


def _lead(row: Mapping[str, Any]) -> dict[str, Any]:
    """The lead as qualification and routing rules see it (from its row, or a lead.scored event's fields)."""
    return {"fit": row["fit"], "engagement": row["engagement"], "total": row["total"], "traits": row["traits"],
            "email": row["email"], "company_domain": row["company_domain"]}


@dataclass
class _Snapshot:
    """What assignments read under the routing lock, kept current in memory for the rest of the batch."""

    reps: dict[str, RepState] | None = None
    cursors: dict[str, Any] = field(default_factory=dict)
    owners: dict[str, str | None] = field(default_factory=dict)  # account owners by company domain

    def record(self, decision: Decision, previous: str | None) -> None:
        if decision.cursor is not None and decision.team:
            self.cursors[decision.team] = decision.cursor
        if self.reps is None:
            return
        if decision.rep_id in self.reps:
            rep = self.reps[decision.rep_id]
            self.reps[decision.rep_id] = replace(rep, open_leads=rep.open_leads + 1)
        if previous in self.reps:  # a reassignment takes the lead off the breached rep's load
            rep = self.reps[previous]
            self.reps[previous] = replace(rep, open_leads=max(0, rep.open_leads - 1))


class RouterHandler(Handler):
    group = "router"
    topics = (LEAD_EVENTS,)

    def __init__(self, db: Database, config: HandoffConfig) -> None:
        self.db = db
        self.config = config
        self.qualifier = Qualifier(config.qualification)
        self.router = Router(config)
        self._lock_queries: dict[str, Select[Any]] = {}  # by dialect name

    async def handle(self, events: list[Event]) -> None:
        relevant: dict[str, LeadScored | ReassignRequested] = {}
        for e in events:
            if e.type == LEAD_SCORED:
                scored = LeadScored.model_validate(e.data)
                if self._may_move(scored):
                    relevant[e.id] = scored
            elif e.type == LEAD_REASSIGN_REQUESTED:
                relevant[e.id] = ReassignRequested.model_validate(e.data)
        if not relevant:
            return
        async with self.db.transaction() as conn:
            # The routing lock first, before any lead row: every router takes its locks in one order, so two
            # routers never deadlock (a lead lock, then the routing lock, against the reverse). On
            # PostgreSQL the claim's statement takes it before it claims (see ``_routing_lock``).
            fresh = await claim_new(conn, self.group, list(relevant), lock_id=ROUTING_LOCK_ID)
            todo = [item for event_id, item in relevant.items() if event_id in fresh]
            # Most scored leads do not qualify: one locking read of all the batch's leads, not one per event.
            rows = await self._lock_leads(conn, {item.lead_id for item in todo})
            snapshot = _Snapshot()  # rep loads, cursors and account owners, read once per batch under the lock
            self._account_owners_of(rows.values(), snapshot)
            # Written at the end; meanwhile ``rows`` follows each lead's stage and owner, so a later event
            # of the same lead in this batch sees what the earlier ones did.
            writes = BatchWrites(rows)
            for item in todo:
                row = rows.get(item.lead_id)
                if row is None:
                    continue
                if isinstance(item, LeadScored):
                    await self._on_scored(conn, row, item, snapshot, writes)
                else:
                    await self._on_reassign(conn, row, item, snapshot, writes)
            await writes.flush(conn)

    def _may_move(self, scored: LeadScored) -> bool:
        """Whether the lead as this event scored it would change stage. Most scored leads do not
        qualify: those events are left alone without a transaction (nothing to claim either: handling
        one again changes nothing). The decision itself is taken on the locked row, which may be newer
        than the event; a row newer in score or traits has its own ``lead.scored`` event still to come.
        (A lead recycled since this event was scored waits for its next score to re-qualify.)"""
        return self.qualifier.qualify(_lead(dict(scored)), scored.stage, scored.rules_hit).stage is not None

    async def _lock_leads(self, conn: AsyncConnection, lead_ids: Collection[str]) -> dict[str, Mapping[str, Any]]:
        """The leads' rows (the columns routing reads), locked, in id order (as the scoring consumer locks).
        With account-based routing each row also holds its account's owner (``ACCOUNT_OWNER``, None
        when nobody owns it yet), read in the same statement (it was one more round trip per batch)."""
        if not lead_ids:
            return {}
        query = self._lock_queries.get(conn.dialect.name)
        if query is None:  # built once per dialect (building it, and its cache key, on every batch cost CPU)
            query = self._lock_queries[conn.dialect.name] = self._lock_query(conn.dialect.name)
        return {row["id"]: row for row in (await conn.execute(query, {"ids": sorted(lead_ids)})).mappings()}

    def _lock_query(self, dialect: str) -> Select[Any]:
        query: Select[Any] = select(*ROW_COLUMNS)
        if self.config.routing.account_based:
            # A subquery, not a join: when the lead row changed while this waited for its lock, PostgreSQL
            # evaluates the row again on its new version, and a subquery with it (its new company's
            # owner), where a joined owner row stays the one first read (the outer join then gave no
            # owner at all: a test shows it). Owners are only written under the routing lock, held here.
            owner = select(account_owners.c.rep_id).where(account_owners.c.company_domain == leads.c.company_domain)
            query = select(*ROW_COLUMNS, owner.scalar_subquery().label(ACCOUNT_OWNER))
        query = query.where(leads.c.id.in_(bindparam("ids", expanding=True))).order_by(leads.c.id)
        if dialect == "postgresql":
            query = query.with_for_update(of=leads)
        return query

    async def _on_scored(self, conn: AsyncConnection, row: Mapping[str, Any], scored: LeadScored,
                         snapshot: _Snapshot, writes: BatchWrites) -> None:
        if row["merged_into"]:
            return
        lead = _lead(row)
        result = self.qualifier.qualify(lead, row["stage"], scored.rules_hit)
        if result.stage is None:
            return
        now = utcnow()
        if result.stage == "disqualified":
            writes.move(row["id"], row["stage"], "disqualified", at=now, cause=result.reason)
            return
        writes.move(row["id"], row["stage"], "mql", at=now, cause=result.reason, qualified_at=now)
        await self.assign(conn, row["id"], lead, now=now, snapshot=snapshot, writes=writes)

    async def _on_reassign(self, conn: AsyncConnection, row: Mapping[str, Any], request: ReassignRequested,
                           snapshot: _Snapshot, writes: BatchWrites) -> None:
        if row["stage"] != "sql" or row["owner"] not in request.exclude_reps:
            return  # contacted meanwhile, or already reassigned: nothing to do
        now = utcnow()
        await writes.flush(conn)  # the UPDATE below must see an assignment made earlier in this batch
        await conn.execute(update(assignments).where(
            assignments.c.lead_id == row["id"], assignments.c.ended_at.is_(None)
        ).values(ended_at=now, end_reason=request.reason))
        await self.assign(conn, row["id"], _lead(row), now=now, exclude={r: "SLA breach" for r in request.exclude_reps},
                          previous=row["owner"], from_stage="sql", snapshot=snapshot, writes=writes)

    async def assign(self, conn: AsyncConnection, lead_id: str, lead: Mapping[str, Any], *, now: datetime,
                     writes: BatchWrites, exclude: Collection[str] | Mapping[str, str] = (),
                     previous: str | None = None, from_stage: str = "mql",
                     snapshot: _Snapshot | None = None) -> Decision:
        """Choose a rep and record it (or the fallback queue) in ``writes``, which the caller flushes.
        The caller holds the routing lock."""
        snapshot = snapshot or _Snapshot()
        if snapshot.reps is None:
            snapshot.reps, snapshot.cursors = await self._routing_state(conn)
        owner = await self._account_owner(conn, lead, snapshot)
        decision = self.router.choose(lead, snapshot.reps, RoutingState(snapshot.cursors), owner, now,
                                      exclude=exclude)
        snapshot.record(decision, previous)
        assignment_id = new_id()
        writes.assignment({"id": assignment_id, "lead_id": lead_id, "rep_id": decision.rep_id,
                           "team": decision.team, "reason": decision.reason, "assigned_at": now,
                           "ended_at": None, "end_reason": None})
        if decision.cursor is not None and decision.team:
            writes.cursor(decision.team, decision.cursor, now)
        if decision.rep_id is None:
            log.warning("lead %s waits in the fallback queue: %s", lead_id, decision.reason)
            if previous is not None:  # reassignment found nobody: the lead goes back to the queue
                writes.move(lead_id, from_stage, "mql", at=now, owner=None,
                            cause=f"reassignment found nobody: {decision.reason}")
        else:
            cause = (f"reassigned from {previous} to {decision.rep_id}: {decision.reason}" if previous
                     else f"assigned to {decision.rep_id}: {decision.reason}")
            writes.move(lead_id, from_stage, "sql", at=now, cause=cause, owner=decision.rep_id,
                        team=decision.team, assigned_at=now)
            domain = lead.get("company_domain")
            if domain and self.config.routing.account_based:
                writes.account_owner(domain, decision.rep_id, now)
                if snapshot.owners.get(domain) is None:  # the account's first owner stays (insert-ignore)
                    snapshot.owners[domain] = decision.rep_id
        writes.event(Event.new(
            LEAD_ASSIGNED, source="router", key=lead_id,
            data=LeadAssigned(lead_id=lead_id, assignment_id=assignment_id, rep_id=decision.rep_id,
                              team=decision.team, reason=decision.reason, assigned_at=now,
                              previous_rep_id=previous).model_dump(mode="json"),
        ))
        return decision

    @staticmethod
    async def _routing_lock(conn: AsyncConnection) -> None:
        """Serialise assignments: open-lead counts and rotation cursors are read and written under it.
        One statement and no row written (it was an insert-ignore of a lock row, then a locking read of
        it: two round trips and a row lock written to the page on every batch). SQLite: its single
        writer serialises the batches already."""
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ROUTING_LOCK_ID})

    async def _routing_state(self, conn: AsyncConnection) -> tuple[dict[str, RepState], dict[str, Any]]:
        """Each rep's state and the rotation cursors by team (one statement on PostgreSQL)."""
        if conn.dialect.name != "postgresql":
            cursors = dict((await conn.execute(select(routing_cursors.c.team, routing_cursors.c.cursor))).all())
            return await self._rep_states(conn), cursors
        loads: dict[str, int] = {}
        overrides: dict[str, tuple[bool | None, int | None]] = {}
        cursors = {}
        for row in (await conn.execute(_ROUTING_STATE_PG, {"reps": [rep.id for rep in self.config.reps]})).all():
            if row.kind == "load":
                loads[row.key] = int(row.open_leads)
            elif row.kind == "rep":
                overrides[row.key] = (row.available, row.capacity)
            else:
                cursors[row.key] = row.cursor
        return self._states(loads, overrides), cursors

    async def _rep_states(self, conn: AsyncConnection) -> dict[str, RepState]:
        loads = await open_lead_counts(conn, [rep.id for rep in self.config.reps])
        overrides = {r.rep_id: (r.available, r.capacity) for r in (await conn.execute(select(rep_state))).all()}
        return self._states(loads, overrides)

    def _states(self, loads: Mapping[str, int],
                overrides: Mapping[str, tuple[bool | None, int | None]]) -> dict[str, RepState]:
        """Each configured rep's state: its open leads, and its availability and capacity as overridden."""
        states = {}
        for rep in self.config.reps:
            available, capacity = overrides.get(rep.id, (None, None))
            states[rep.id] = RepState(rep_id=rep.id, open_leads=int(loads.get(rep.id, 0)),
                                      available=True if available is None else bool(available), capacity=capacity)
        return states

    def _account_owners_of(self, rows: Collection[Mapping[str, Any]], snapshot: _Snapshot) -> None:
        """The owners of the batch's accounts, as read with the leads (None for accounts nobody owns yet)."""
        if self.config.routing.account_based:
            snapshot.owners.update((row["company_domain"], row[ACCOUNT_OWNER]) for row in rows if row["company_domain"])

    async def _account_owner(self, conn: AsyncConnection, lead: Mapping[str, Any], snapshot: _Snapshot) -> str | None:
        domain = lead.get("company_domain")
        if not domain or not self.config.routing.account_based:
            return None
        if domain not in snapshot.owners:
            snapshot.owners[domain] = (await conn.execute(select(account_owners.c.rep_id).where(
                account_owners.c.company_domain == domain))).scalar_one_or_none()
        return snapshot.owners[domain]

    async def sweep_fallback_queue(self, limit: int = 50) -> int:
        """Try again for qualified leads nobody could take (capacity freed, a rep back in office)."""
        async with self.db.read() as conn:
            waiting = list((await conn.execute(select(leads.c.id).where(
                leads.c.stage == "mql", leads.c.owner.is_(None), leads.c.merged_into.is_(None))
                .order_by(leads.c.qualified_at).limit(limit))).scalars())
        assigned = 0
        for lead_id in waiting:
            async with self.db.transaction() as conn:
                await self._routing_lock(conn)
                row = (await self._lock_leads(conn, [lead_id])).get(lead_id)
                if row is None or row["stage"] != "mql" or row["owner"] is not None:
                    continue
                lead = _lead(row)
                decision = await self._preview(conn, lead)
                if decision.rep_id is None:
                    break  # still nobody: do not fill the table with fallback rows
                writes = BatchWrites({lead_id: row})
                await self.assign(conn, lead_id, lead, now=utcnow(), writes=writes)
                await writes.flush(conn)
                assigned += 1
        return assigned

    async def _preview(self, conn: AsyncConnection, lead: Mapping[str, Any]) -> Decision:
        reps = await self._rep_states(conn)
        cursors = dict((await conn.execute(select(routing_cursors.c.team, routing_cursors.c.cursor))).all())
        owner = await self._account_owner(conn, lead, _Snapshot())
        return self.router.choose(lead, reps, RoutingState(cursors), owner, utcnow())
