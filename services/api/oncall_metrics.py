"""Prometheus gauges for on-call, refreshed from SQL right before each ``/metrics`` scrape.

    metrics = OnCallMetrics(container)
    container.extras.setdefault("metrics_hooks", []).append(metrics.refresh)

=============================================  ====================================================
gauge                                          value
=============================================  ====================================================
``handoff_leads_awaiting_contact``             leads in ``sql`` (assigned, not yet contacted)
``handoff_leads_awaiting_contact_oldest_seconds``  how long the longest-waiting one has waited
``handoff_sla_breached_leads``                 leads whose first-contact SLA clock breached
``handoff_sla_overdue_leads``                  clocks still running past their due time
``handoff_crm_delivery_failures{state}``       CRM pushes ``dead`` (gave up) or ``retrying`` (pending
                                               after a failed attempt)
``handoff_dead_letters{origin}``               dead letters not yet replayed, per origin
``handoff_consumer_group_lag{group}``          messages behind per consumer group, when the process
                                               provides ``container.extras["consumer_lag"]`` (the
                                               consumers' own ``handoff_consumer_lag{group, topic,
                                               partition}`` comes from services.consumer)
=============================================  ====================================================

``consumer_lag`` is a callable (sync or async) returning ``{group_id: lag}``; a failure there is
logged and leaves the lag gauge as it was. The gauges live in the default registry, created once per
process (several containers in one process, as in tests, share them).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import REGISTRY, Gauge
from sqlalchemy import and_, func, or_, select

from services.db.models import dead_letters, deliveries, lead_sla, leads
from services.events import utcnow
from services.runtime import Container

log = logging.getLogger(__name__)

_GAUGES: dict[str, Gauge] = {}


def _gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
    """The process's one gauge called ``name``: created on first use, reused after (also when another
    import path already registered it in the default registry)."""
    if name not in _GAUGES:
        existing = REGISTRY._names_to_collectors.get(name)  # no public lookup exists
        if isinstance(existing, Gauge):
            _GAUGES[name] = existing
        else:
            _GAUGES[name] = Gauge(name, documentation, labels)
    return _GAUGES[name]


class OnCallMetrics:
    def __init__(self, container: Container) -> None:
        self.container = container
        self.awaiting = _gauge("handoff_leads_awaiting_contact",
                               "Leads assigned to a rep (stage sql) and not contacted yet")
        self.oldest = _gauge("handoff_leads_awaiting_contact_oldest_seconds",
                             "Seconds the longest-waiting assigned lead has waited for its first contact")
        self.breached = _gauge("handoff_sla_breached_leads",
                               "Leads whose first-contact SLA was breached (lead_sla.breached_at set)")
        self.overdue = _gauge("handoff_sla_overdue_leads",
                              "SLA clocks still running past their due time (the breach not processed yet)")
        self.crm_failures = _gauge("handoff_crm_delivery_failures",
                                   "CRM pushes that failed: state=dead (given up) or retrying", ("state",))
        self.dead_letters = _gauge("handoff_dead_letters", "Dead letters not replayed yet, per origin",
                                   ("origin",))
        self.lag = _gauge("handoff_consumer_group_lag", "Messages not yet consumed, per consumer group",
                          ("group",))

    async def refresh(self) -> None:
        now = utcnow()
        async with self.container.db.read() as conn:
            waiting = (await conn.execute(
                select(func.count(), func.min(func.coalesce(leads.c.assigned_at, leads.c.stage_changed_at)))
                .where(leads.c.stage == "sql", leads.c.merged_into.is_(None)))).one()
            breached = (await conn.execute(
                select(func.count()).select_from(lead_sla).where(lead_sla.c.breached_at.is_not(None)))).scalar_one()
            overdue = (await conn.execute(
                select(func.count()).select_from(lead_sla).where(lead_sla.c.state == "running",
                                                                 lead_sla.c.due_at < now))).scalar_one()
            crm: dict[str, int] = dict((await conn.execute(
                select(deliveries.c.status, func.count()).where(
                    deliveries.c.target == "crm",
                    or_(deliveries.c.status == "dead",
                        and_(deliveries.c.status == "pending", deliveries.c.attempts > 0)))
                .group_by(deliveries.c.status))).tuples().all())
            letters = (await conn.execute(
                select(dead_letters.c.origin, func.count()).where(dead_letters.c.replayed_at.is_(None))
                .group_by(dead_letters.c.origin))).all()
        self.awaiting.set(int(waiting[0]))
        self.oldest.set(max(0.0, (now - waiting[1]).total_seconds()) if waiting[1] is not None else 0.0)
        self.breached.set(int(breached))
        self.overdue.set(int(overdue))
        self.crm_failures.labels(state="dead").set(int(crm.get("dead", 0)))
        self.crm_failures.labels(state="retrying").set(int(crm.get("pending", 0)))
        # Origins come and go (a replay empties one): start from a clean slate each scrape.
        self.dead_letters.clear()
        for origin, count in letters:
            self.dead_letters.labels(origin=origin).set(int(count))
        await self._refresh_lag()

    async def _refresh_lag(self) -> None:
        source = self.container.extras.get("consumer_lag")
        if source is None:
            return
        try:
            result: Any = source()
            if inspect.isawaitable(result):
                result = await result
            lags: Mapping[str, float] = result or {}
        except Exception as exc:  # the broker may be briefly unreachable; keep serving the rest
            log.warning("consumer lag unavailable: %s", exc)
            return
        self.lag.clear()
        for group, lag in lags.items():
            self.lag.labels(group=str(group)).set(float(lag))
