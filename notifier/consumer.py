"""The notifier consumer: every assignment starts an SLA clock and a CRM push, in one transaction.

``lead.assigned`` (topic ``assignments``) -> ``lead_sla`` row (due time in the rep's business time),
``sla_timers`` rows (each reminder, then the breach) and a ``deliveries`` row for the CRM push
(idempotency key ``<lead_id>:<assignment_id>``); a reassignment cancels the previous clock.
A lead nobody could take (fallback queue) raises an alert instead.
``lead.feedback`` (topic ``lead-events``) -> once a paged lead is contacted, PagerDuty ``resolve``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from notifier.alerts import Alert, resolved
from notifier.queue import enqueue_alert, enqueue_crm_pushes
from notifier.sla import SlaPlan, plan_sla
from services.config import HandoffConfig, Rep
from services.consumer import Handler
from services.db.arrays import insert_rows
from services.db.database import Database
from services.db.dialect import upsert
from services.db.models import lead_sla, sla_timers
from services.events import (
    ASSIGNMENTS,
    LEAD_ASSIGNED,
    LEAD_EVENTS,
    LEAD_FEEDBACK,
    Event,
    LeadAssigned,
    LeadFeedback,
    utcnow,
)
from services.idempotency import claim_new

CLOCK_STOPPING_FEEDBACK = ("contacted", "accepted", "rejected", "won", "lost")
# A lead's pending timers of any other assignment than ``keep`` (built once: one per batch otherwise).
_CANCEL_OTHER_TIMERS = update(sla_timers).where(
    sla_timers.c.lead_id == bindparam("lead"), sla_timers.c.status == "pending",
    sla_timers.c.assignment_id != bindparam("keep")).values(status="cancelled")


@dataclass
class _Clocks:
    """A batch's assignments, reduced to what they leave behind per lead (written by ``_flush``)."""

    latest: dict[str, str] = field(default_factory=dict)  # lead -> its newest assignment: cancel the rest
    sla: dict[str, tuple[LeadAssigned, SlaPlan]] = field(default_factory=dict)  # lead -> newest clock started
    pushes: list[tuple[str, str]] = field(default_factory=list)  # (lead, assignment), every one, in order

    def running(self) -> list[tuple[LeadAssigned, SlaPlan]]:
        """The clocks whose timers run: the newest assignment of their lead (not one a fallback followed)."""
        return [(a, plan) for a, plan in self.sla.values() if self.latest[a.lead_id] == a.assignment_id]

    def clear(self) -> None:
        self.latest.clear()
        self.sla.clear()
        self.pushes.clear()


class NotifierHandler(Handler):
    group = "notifier"
    topics = (ASSIGNMENTS, LEAD_EVENTS)

    def __init__(self, db: Database, config: HandoffConfig) -> None:
        self.db = db
        self.config = config

    async def handle(self, events: list[Event]) -> None:
        relevant = [e for e in events if e.type in (LEAD_ASSIGNED, LEAD_FEEDBACK)]
        if not relevant:
            return
        async with self.db.transaction() as conn:
            fresh = await claim_new(conn, self.group, [e.id for e in relevant])
            clocks = _Clocks()
            for event in relevant:
                if event.id not in fresh:
                    continue
                if event.type == LEAD_ASSIGNED:
                    await self._on_assigned(conn, LeadAssigned.model_validate(event.data), event.id, clocks)
                else:
                    await self._flush(conn, clocks)  # feedback reads the clock an assignment here may start
                    await self._on_feedback(conn, LeadFeedback.model_validate(event.data), event.id)
            await self._flush(conn, clocks)

    async def _on_assigned(self, conn: AsyncConnection, assigned: LeadAssigned, event_id: str,
                           clocks: _Clocks) -> None:
        now = utcnow()
        # A new assignment replaces the previous clock, whatever it was doing.
        clocks.latest[assigned.lead_id] = assigned.assignment_id
        if assigned.rep_id is None:
            await enqueue_alert(conn, self.config.alerts, Alert(
                id=f"fallback-{event_id}", kind="dead_letter", lead_id=assigned.lead_id, rep_id=None, due_at=None,
                at=now, team=assigned.team, reason=f"nobody can take the lead (fallback queue): {assigned.reason}",
                details={"fallback_queue": True}), now)
            return
        rep = self.config.rep(assigned.rep_id) or Rep(id=assigned.rep_id)
        clocks.sla[assigned.lead_id] = (assigned, plan_sla(assigned.assigned_at, self.config.sla, rep))
        if self.config.crm is not None:
            clocks.pushes.append((assigned.lead_id, assigned.assignment_id))

    async def _flush(self, conn: AsyncConnection, clocks: _Clocks) -> None:
        """Write the batch's clocks: a statement per table instead of four per assignment."""
        if clocks.latest:
            await conn.execute(_CANCEL_OTHER_TIMERS,
                               [{"lead": lead, "keep": keep} for lead, keep in sorted(clocks.latest.items())])
        if clocks.sla:
            await conn.execute(upsert(conn, lead_sla, ["lead_id"], [
                "assignment_id", "rep_id", "due_at", "state", "reminders_sent", "breached_at", "started_at",
                "stopped_at"]), [{
                    "lead_id": a.lead_id, "assignment_id": a.assignment_id, "rep_id": a.rep_id,
                    "due_at": plan.due_at, "state": "running", "reminders_sent": 0, "breached_at": None,
                    "paged": False, "started_at": a.assigned_at, "stopped_at": None}
                    for a, plan in (clocks.sla[lead] for lead in sorted(clocks.sla))])
        timers = [
            {"lead_id": a.lead_id, "assignment_id": a.assignment_id, "rep_id": a.rep_id,
             "kind": "reminder" if timer.kind == "sla_reminder" else "breach", "fraction": timer.fraction,
             "due_at": plan.due_at, "fire_at": timer.at, "status": "pending"}
            for a, plan in clocks.running() for timer in plan.timers()]
        # One statement for all of them (three or more per assignment; an executemany is a statement per row).
        await insert_rows(conn, sla_timers, timers)
        await enqueue_crm_pushes(conn, clocks.pushes, utcnow())
        clocks.clear()

    async def _on_feedback(self, conn: AsyncConnection, feedback: LeadFeedback, event_id: str) -> None:
        if feedback.type not in CLOCK_STOPPING_FEEDBACK:
            return
        row = (await conn.execute(select(lead_sla).where(lead_sla.c.lead_id == feedback.lead_id))).mappings().first()
        if row is None:
            return
        await conn.execute(update(sla_timers).where(
            sla_timers.c.lead_id == feedback.lead_id, sla_timers.c.status == "pending").values(status="cancelled"))
        if row["paged"]:
            now = utcnow()
            await conn.execute(update(lead_sla).where(lead_sla.c.lead_id == feedback.lead_id).values(paged=False))
            await enqueue_alert(conn, self.config.alerts, resolved(
                id=f"resolve-{event_id}", lead_id=feedback.lead_id, rep_id=row["rep_id"], due_at=row["due_at"],
                at=now), now)
