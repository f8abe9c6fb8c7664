"""Outbound work as database rows: every CRM push and every alert is a ``deliveries`` row.

    await enqueue_crm_push(conn, lead_id, assignment_id, now)
    await enqueue_alert(conn, config.alerts, alert, now)          # one row per sink the alert goes to

Rows are created in the same transaction as the decision that causes them, so nothing is lost; the
delivery worker (``notifier.deliveries``) sends them, in order per lead and target.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from notifier.alerts import Alert, sinks_for
from services.config import Alerts
from services.db.models import deliveries

CRM_TARGET = "crm"


def alert_to_json(alert: Alert) -> dict[str, Any]:
    data = dataclasses.asdict(alert)
    for key in ("due_at", "at"):
        if data[key] is not None:
            data[key] = data[key].isoformat()
    data["details"] = dict(alert.details)
    return data


def alert_from_json(data: dict[str, Any]) -> Alert:
    values = dict(data)
    for key in ("due_at", "at"):
        if values.get(key) is not None:
            values[key] = datetime.fromisoformat(values[key])
    return Alert(**values)


DIRTY = "deliveries_dirty"  # a flag in conn.info: the committed transaction queued deliveries


async def enqueue_crm_push(conn: AsyncConnection, lead_id: str, assignment_id: str, now: datetime) -> None:
    await enqueue_crm_pushes(conn, [(lead_id, assignment_id)], now)


async def enqueue_crm_pushes(conn: AsyncConnection, pushes: Sequence[tuple[str, str]], now: datetime) -> None:
    """One CRM push per ``(lead_id, assignment_id)``, in order, in one statement."""
    if not pushes:
        return
    conn.info[DIRTY] = True
    await conn.execute(deliveries.insert(), [
        {"target": CRM_TARGET, "order_key": lead_id, "idempotency_key": f"{lead_id}:{assignment_id}",
         "kind": "lead_push", "lead_id": lead_id, "payload": {"lead_id": lead_id, "assignment_id": assignment_id},
         "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
        for lead_id, assignment_id in pushes])


async def enqueue_alert(conn: AsyncConnection, alerts: Alerts, alert: Alert, now: datetime) -> int:
    """One row per configured sink the alert is routed to; the number of rows."""
    configured = {"webhook": alerts.webhook, "slack": alerts.slack, "pagerduty": alerts.pagerduty}
    rows = [
        {"target": f"alert:{sink}", "order_key": alert.lead_id or alert.id,
         "idempotency_key": f"alert:{alert.id}:{sink}", "kind": alert.kind, "lead_id": alert.lead_id or None,
         "payload": {"alert": alert_to_json(alert), "sink": sink}, "status": "pending", "attempts": 0,
         "next_attempt_at": now, "created_at": now}
        for sink in sinks_for(alert) if configured.get(sink) is not None
    ]
    if rows:
        conn.info[DIRTY] = True
        await conn.execute(deliveries.insert(), rows)
    return len(rows)
