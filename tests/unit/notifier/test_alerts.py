"""Alert payloads and routing (pure): webhook, Slack, PagerDuty Events v2."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from notifier.alerts import (
    Alert,
    alert_requests,
    breach,
    dead_letter,
    pagerduty_payload,
    reminder,
    resolved,
    sinks_for,
    slack_payload,
    webhook_payload,
)
from services.config import Alerts, Rep

ANNA = Rep(id="anna", timezone="Europe/Berlin", manager="maria")
DUE = datetime(2026, 11, 22, 14, 0, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 22, 14, 0, 2, tzinfo=UTC)
ALL_SINKS = Alerts.model_validate({
    "webhook": {"url": "http://alerts.test/alerts"},
    "pagerduty": {"url": "http://alerts.test/v2/enqueue", "routing_key_env": "PD_ROUTING_KEY"},
    "slack": {"url": "http://alerts.test/slack"},
})
ENV = {"PD_ROUTING_KEY": "pd-key"}


def test_webhook_payload_has_the_contract_keys() -> None:
    body = webhook_payload(reminder(id="t1", lead_id="L1", rep=ANNA, due_at=DUE, fraction=0.5, at=NOW, team="emea"))
    assert body["kind"] == "sla_reminder"
    assert (body["lead_id"], body["rep_id"], body["due_at"]) == ("L1", "anna", "2026-11-22T14:00:01Z")
    assert body["fraction"] == 0.5 and body["team"] == "emea" and body["id"] == "t1"
    assert "50%" in body["summary"]
    dead = webhook_payload(dead_letter(id="d1", lead_id="L1", rep_id=None, reason="HTTP 400: bad", at=NOW,
                                       details={"crm": "webhook"}))
    assert dead["kind"] == "dead_letter" and dead["due_at"] is None and dead["rep_id"] is None
    assert dead["reason"] == "HTTP 400: bad" and dead["details"] == {"crm": "webhook"}


def test_pagerduty_trigger_and_resolve_share_the_lead_dedup_key() -> None:
    page = breach(id="t2", action="page_oncall", lead_id="L1", rep=ANNA, due_at=DUE, at=NOW, team="emea")
    trigger = pagerduty_payload(page, "pd-key")
    assert trigger["routing_key"] == "pd-key" and trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "handoff-lead-L1"
    payload = trigger["payload"]
    assert payload["severity"] == "critical" and payload["source"] == "lead-handoff"
    assert "L1" in payload["summary"] and "anna" in payload["summary"] and len(payload["summary"]) <= 1024
    assert payload["custom_details"]["due_at"] == "2026-11-22T14:00:01Z"
    resolve = pagerduty_payload(resolved(id="t3", lead_id="L1", rep_id="anna", due_at=DUE, at=NOW), "pd-key")
    assert resolve == {"routing_key": "pd-key", "event_action": "resolve", "dedup_key": "handoff-lead-L1"}


def test_slack_manager_alert_names_the_manager_and_escapes_markup() -> None:
    alert = breach(id="t4", action="alert_manager", lead_id="L<1>&", rep=ANNA, due_at=DUE, at=NOW)
    body = slack_payload(alert)
    assert body["text"].startswith("@maria: ") and "manager maria" in body["text"]
    section = body["blocks"][0]["text"]["text"]
    assert "L&lt;1&gt;&amp;" in section and "<1>" not in section
    assert body["blocks"][1]["type"] == "context"


@pytest.mark.parametrize(
    ("alert", "sinks"),
    [
        (reminder(id="a", lead_id="L", rep=ANNA, due_at=DUE, fraction=0.8, at=NOW), ("webhook", "slack")),
        (breach(id="a", action="alert_rep", lead_id="L", rep=ANNA, due_at=DUE, at=NOW), ("webhook", "slack")),
        (breach(id="a", action="alert_manager", lead_id="L", rep=ANNA, due_at=DUE, at=NOW), ("webhook", "slack")),
        (breach(id="a", action="page_oncall", lead_id="L", rep=ANNA, due_at=DUE, at=NOW), ("webhook", "pagerduty")),
        (breach(id="a", action="reassign", lead_id="L", rep=ANNA, due_at=DUE, at=NOW), ("webhook", "slack")),
        (resolved(id="a", lead_id="L", rep_id="anna", due_at=DUE, at=NOW), ("webhook", "pagerduty")),
        (dead_letter(id="a", lead_id="L", rep_id=None, reason="x", at=NOW), ("webhook", "slack")),
    ],
)
def test_routing_table(alert: Alert, sinks: tuple[str, ...]) -> None:
    assert sinks_for(alert) == sinks
    requests, problems = alert_requests(ALL_SINKS, alert, ENV)
    assert problems == []
    assert [r.step for r in requests] == [f"alert:{s}" for s in sinks]
    assert all(r.header("Idempotency-Key") == f"alert:a:{s}" for r, s in zip(requests, sinks, strict=True))


def test_unconfigured_sinks_are_skipped_and_a_missing_routing_key_is_reported() -> None:
    page = breach(id="p", action="page_oncall", lead_id="L", rep=ANNA, due_at=DUE, at=NOW)
    requests, problems = alert_requests(Alerts(), page, ENV)
    assert (requests, problems) == ([], [])
    requests, problems = alert_requests(ALL_SINKS, page, {})
    assert [r.url for r in requests] == ["http://alerts.test/alerts"]  # the webhook still goes out
    assert problems == [
        "alerts.pagerduty.routing_key_env names PD_ROUTING_KEY, which is not set; "
        "export PD_ROUTING_KEY=<value> and restart"
    ]
