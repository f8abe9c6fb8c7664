"""Alerts: what the SLA engine and the dead-letter store tell people, and where each alert goes.

An :class:`Alert` is plain data; the builders turn it into the body each sink expects, and
:func:`alert_requests` into ready :class:`~notifier.crm.OutboundRequest` s for the configured sinks::

    alert = breach(id="timer-42", action="alert_manager", lead_id="L1", rep=rep, due_at=due, at=now)
    requests, problems = alert_requests(config.alerts, alert, environ=os.environ)
    for request in requests:             # independent: one failing sink does not hold up the others
        result = await send_alert(client, request)

Routing (which sink gets which alert). The webhook is the complete machine-readable feed; Slack is
for people who can act on it; PagerDuty only for the page and its resolution:

=======================================  =======  =====================  =====================
alert                                    webhook  slack                  pagerduty
=======================================  =======  =====================  =====================
``sla_reminder`` (each fraction)         yes      yes, to the rep        -
``sla_breach`` action ``alert_rep``      yes      yes, to the rep        -
``sla_breach`` action ``alert_manager``  yes      yes, names the manager -
``sla_breach`` action ``page_oncall``    yes      -                      ``trigger``
``sla_breach`` action ``reassign``       yes      yes                    -
``sla_resolved`` (contacted after page)  yes      -                      ``resolve``
``dead_letter``                          yes      yes                    -
=======================================  =======  =====================  =====================

PagerDuty's ``dedup_key`` is ``handoff-lead-<lead_id>``: repeated pages for one lead stay one
incident, and the ``resolve`` sent once the lead is contacted closes it. The caller sends
``sla_resolved`` only for a lead that was paged. Every request carries ``Idempotency-Key:
alert:<alert id>:<sink>``; pass a stable ``id`` (the timer or delivery row id) so retries repeat it.

Slack mentions: we only know the manager's config id, so the text names ``@<manager>`` in plain
words; a real ``<@U123>`` mention needs the Slack user id as the manager's id.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from notifier.crm.outbound import (
    IDEMPOTENCY_HEADER,
    MissingSecret,
    OutboundRequest,
    SendResult,
    json_bytes,
    secret_from,
    send_sequence,
)
from services.config import Alerts, Rep

AlertKind = Literal["sla_reminder", "sla_breach", "sla_resolved", "dead_letter"]
Sink = Literal["webhook", "slack", "pagerduty"]
SOURCE = "lead-handoff"


@dataclass(frozen=True)
class Alert:
    id: str  # stable across retries: the timer or delivery row id
    kind: AlertKind
    lead_id: str
    rep_id: str | None
    due_at: datetime | None
    at: datetime  # when the alert was raised
    action: str | None = None  # sla_breach: the on_breach step
    fraction: float | None = None  # sla_reminder: share of the window gone
    manager: str | None = None
    team: str | None = None
    reason: str | None = None  # dead_letter: why; reassign: why
    details: Mapping[str, Any] = field(default_factory=dict)


def reminder(
    *, id: str, lead_id: str, rep: Rep | None, due_at: datetime, fraction: float, at: datetime, team: str | None = None
) -> Alert:
    return Alert(id, "sla_reminder", lead_id, rep.id if rep else None, due_at, at, fraction=fraction,
                 manager=rep.manager if rep else None, team=team)


def breach(
    *, id: str, action: str, lead_id: str, rep: Rep | None, due_at: datetime, at: datetime,
    team: str | None = None, reason: str | None = None,
) -> Alert:
    return Alert(id, "sla_breach", lead_id, rep.id if rep else None, due_at, at, action=action,
                 manager=rep.manager if rep else None, team=team, reason=reason)


def resolved(*, id: str, lead_id: str, rep_id: str | None, due_at: datetime | None, at: datetime) -> Alert:
    return Alert(id, "sla_resolved", lead_id, rep_id, due_at, at, reason="lead contacted")


def dead_letter(
    *, id: str, lead_id: str, rep_id: str | None, reason: str, at: datetime, details: Mapping[str, Any] | None = None
) -> Alert:
    return Alert(id, "dead_letter", lead_id, rep_id, None, at, reason=reason, details=dict(details or {}))


def sinks_for(alert: Alert) -> tuple[Sink, ...]:
    """The routing table of the module docstring."""
    if alert.kind == "sla_breach" and alert.action == "page_oncall":
        return ("webhook", "pagerduty")
    if alert.kind == "sla_resolved":
        return ("webhook", "pagerduty")
    return ("webhook", "slack")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def headline(alert: Alert) -> str:
    """One human sentence: Slack's fallback text and PagerDuty's summary."""
    rep = alert.rep_id or "nobody"
    due = _iso(alert.due_at)
    if alert.kind == "sla_reminder":
        share = f"{alert.fraction:.0%}" if alert.fraction is not None else "part"
        return (f"Reminder: lead {alert.lead_id} assigned to {rep} is still untouched; "
                f"{share} of the window gone, due {due}")
    if alert.kind == "sla_resolved":
        return f"Resolved: lead {alert.lead_id} was contacted"
    if alert.kind == "dead_letter":
        return f"Dead letter: the push of lead {alert.lead_id} failed for good: {alert.reason or 'unknown reason'}"
    missed = f"SLA breached: lead {alert.lead_id} assigned to {rep} was not contacted by {due}"
    if alert.action == "alert_manager":
        return f"{missed}; manager {alert.manager or '(none configured)'} please step in"
    if alert.action == "page_oncall":
        return f"{missed}; paging on-call"
    if alert.action == "reassign":
        return f"{missed}; reassigning the lead"
    return missed


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """``alerts.webhook`` body: ``kind``, ``lead_id``, ``rep_id``, ``due_at`` always; the rest when known."""
    body: dict[str, Any] = {
        "kind": alert.kind,
        "id": alert.id,
        "lead_id": alert.lead_id,
        "rep_id": alert.rep_id,
        "due_at": _iso(alert.due_at),
        "at": _iso(alert.at),
        "summary": headline(alert),
    }
    optional = {"action": alert.action, "fraction": alert.fraction, "manager": alert.manager,
                "team": alert.team, "reason": alert.reason, "details": dict(alert.details) or None}
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook body: ``text`` (fallback, notifications) plus ``blocks``."""
    text = headline(alert)
    if alert.kind == "sla_breach" and alert.action == "alert_manager" and alert.manager:
        text = f"@{alert.manager}: {text}"
    facts = [f"lead `{_slack_escape(alert.lead_id)}`"]
    if alert.rep_id:
        facts.append(f"rep `{_slack_escape(alert.rep_id)}`")
    if alert.due_at is not None:
        facts.append(f"due {_iso(alert.due_at)}")
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(text)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(facts)}]},
        ],
    }


def dedup_key(lead_id: str) -> str:
    return f"handoff-lead-{lead_id}"


def pagerduty_payload(alert: Alert, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 body: ``trigger`` for a page, ``resolve`` for ``sla_resolved``."""
    if alert.kind == "sla_resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key(alert.lead_id)}
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(alert.lead_id),
        "client": SOURCE,
        "payload": {
            "summary": headline(alert)[:1024],  # PagerDuty's limit
            "severity": "critical" if alert.kind == "sla_breach" else "error",
            "source": SOURCE,
            "timestamp": _iso(alert.at),
            "component": "notifier",
            "group": alert.team or "sales",
            "class": alert.kind,
            "custom_details": {k: v for k, v in webhook_payload(alert).items() if k not in ("summary",)},
        },
    }


def alert_requests(
    alerts: Alerts, alert: Alert, environ: Mapping[str, str] | None = None
) -> tuple[list[OutboundRequest], list[str]]:
    """Requests for every configured sink that ``alert`` is routed to, and the problems that kept any out.

    A sink that is not configured is skipped silently (alerts are optional); one that is configured but
    unusable (PagerDuty without its routing key) is skipped and named in ``problems`` so the others
    still go out. ``environ`` defaults to ``os.environ``.
    """
    env = os.environ if environ is None else environ
    requests: list[OutboundRequest] = []
    problems: list[str] = []
    for sink in sinks_for(alert):
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: f"alert:{alert.id}:{sink}"}
        if sink == "webhook" and alerts.webhook is not None:
            body = json_bytes(webhook_payload(alert))
            requests.append(OutboundRequest("POST", alerts.webhook.url, headers, body, step="alert:webhook"))
        elif sink == "slack" and alerts.slack is not None:
            body = json_bytes(slack_payload(alert))
            requests.append(OutboundRequest("POST", alerts.slack.url, headers, body, step="alert:slack"))
        elif sink == "pagerduty" and alerts.pagerduty is not None:
            try:
                key = secret_from(env, alerts.pagerduty.routing_key_env, "alerts.pagerduty.routing_key_env")
            except MissingSecret as exc:
                problems.append(str(exc))
                continue
            body = json_bytes(pagerduty_payload(alert, key))
            requests.append(OutboundRequest("POST", alerts.pagerduty.url, headers, body, step="alert:pagerduty"))
    return requests, problems


async def send_alert(client: httpx.AsyncClient, request: OutboundRequest, timeout: float | None = 10) -> SendResult:
    """Send one alert request; classify the result with :func:`notifier.retry.classify` like a CRM push."""
    return await send_sequence(client, [request], timeout=timeout)
