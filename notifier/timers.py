"""The SLA clock: due timer rows fire reminders, then the breach and its ``on_breach`` chain.

Timers are rows (they survive restarts: one that came due while the notifier was down fires on start),
claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so several notifiers never fire one twice; the
effects (alert rows, a reassignment request in the outbox, the lead's SLA state) commit with the
timer's ``fired`` status.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from notifier.alerts import breach, reminder
from notifier.queue import enqueue_alert
from notifier.sla import breach_actions
from services.config import HandoffConfig
from services.db.database import Database
from services.db.dialect import claim
from services.db.models import lead_sla, sla_timers
from services.events import LEAD_EVENTS, LEAD_REASSIGN_REQUESTED, Event, ReassignRequested, utcnow
from services.outbox import add_events

log = logging.getLogger(__name__)
FIRED = Counter("handoff_sla_timers_fired_total", "SLA timers fired", ["kind"])
BREACHES = Counter("handoff_sla_breaches_total", "SLA breaches")


class SlaClock:
    def __init__(self, db: Database, config: HandoffConfig, *, tick: float = 0.25, batch: int = 100) -> None:
        self.db = db
        self.config = config
        self.tick = tick
        self.batch = batch

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                fired = await self.fire_due(utcnow())
            except Exception as exc:  # database away: the rows wait, we retry
                log.warning("sla clock: %s", exc)
                fired = 0
            if fired < self.batch:
                try:
                    await asyncio.wait_for(stop.wait(), self.tick)
                except TimeoutError:
                    pass

    async def fire_due(self, now: datetime) -> int:
        async with self.db.transaction() as conn:
            rows = (await conn.execute(claim(conn, select(sla_timers).where(
                sla_timers.c.status == "pending", sla_timers.c.fire_at <= now,
            ).order_by(sla_timers.c.fire_at, sla_timers.c.id).limit(self.batch)))).mappings().all()
            for timer in rows:
                await self._fire(conn, timer, now)
        return len(rows)

    async def _fire(self, conn: AsyncConnection, timer: Any, now: datetime) -> None:
        sla = (await conn.execute(select(lead_sla).where(lead_sla.c.lead_id == timer["lead_id"]))).mappings().first()
        if sla is None or sla["assignment_id"] != timer["assignment_id"] or sla["state"] != "running":
            await self._mark(conn, timer["id"], "cancelled", now)  # contacted, reassigned or breached meanwhile
            return
        rep = self.config.rep(timer["rep_id"]) if timer["rep_id"] else None
        lead_id = timer["lead_id"]
        if timer["kind"] == "reminder":
            await enqueue_alert(conn, self.config.alerts, reminder(
                id=f"timer-{timer['id']}", lead_id=lead_id, rep=rep, due_at=sla["due_at"],
                fraction=float(timer["fraction"] or 0), at=now), now)
            await conn.execute(update(lead_sla).where(lead_sla.c.lead_id == lead_id).values(
                reminders_sent=lead_sla.c.reminders_sent + 1))
        else:
            await self._breach(conn, timer, sla, rep, now)
        await self._mark(conn, timer["id"], "fired", now)
        FIRED.labels(timer["kind"]).inc()

    async def _breach(self, conn: AsyncConnection, timer: Any, sla: Any, rep: Any, now: datetime) -> None:
        lead_id = timer["lead_id"]
        BREACHES.inc()
        values: dict[str, Any] = {"state": "breached", "breached_at": now}
        for action in breach_actions(self.config.sla):
            if action in ("alert_rep", "alert_manager", "page_oncall"):
                await enqueue_alert(conn, self.config.alerts, breach(
                    id=f"timer-{timer['id']}-{action}", action=action, lead_id=lead_id, rep=rep,
                    due_at=sla["due_at"], at=now), now)
                if action == "page_oncall":
                    values["paged"] = True
            elif action == "reassign" and timer["rep_id"]:
                await enqueue_alert(conn, self.config.alerts, breach(
                    id=f"timer-{timer['id']}-reassign", action="reassign", lead_id=lead_id, rep=rep,
                    due_at=sla["due_at"], at=now, reason=f"first touch not made by {timer['rep_id']} in time"), now)
                await add_events(conn, LEAD_EVENTS, [Event.new(
                    LEAD_REASSIGN_REQUESTED, source="notifier", key=lead_id, id=f"reassign-{timer['id']}",
                    data=ReassignRequested(lead_id=lead_id, exclude_reps=[timer["rep_id"]],
                                           reason=f"SLA breached by {timer['rep_id']}", at=now).model_dump(mode="json"),
                )])
        await conn.execute(update(lead_sla).where(lead_sla.c.lead_id == lead_id).values(**values))

    @staticmethod
    async def _mark(conn: AsyncConnection, timer_id: int, status: str, now: datetime) -> None:
        await conn.execute(update(sla_timers).where(sla_timers.c.id == timer_id).values(status=status, fired_at=now))
