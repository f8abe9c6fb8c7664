"""A lead document shaped like ``GET /v1/leads/{id}`` (contract section 3), for the adapter tests."""

from __future__ import annotations

from typing import Any

from services.config import Crm

ASSIGNMENT_ID = "asg-7f3a"
SECRET = "crm-signing-secret"
TOKEN = "crm-token-123"
ENV = {"CRM_SIGNING_SECRET": SECRET, "CRM_TOKEN": TOKEN, "PD_ROUTING_KEY": "pd-routing-key"}


def lead(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "lead-42",
        "emails": ["jane.doe@acme.com"],
        "user_ids": ["mautic:17"],
        "anonymous_ids": ["a-123"],
        "company_domain": "acme.com",
        "traits": {"first_name": "Jane", "last_name": "Doe", "title": "VP Sales", "company": "Acme",
                   "country": "DE", "email_domain": "acme.com"},
        "score": {
            "fit": 30.0,
            "engagement": 62.5,
            "total": 92.5,
            "breakdown": [
                {"rule": "senior-title", "points": 20, "at": "2026-11-20T09:00:00Z"},
                {"rule": "target-size", "points": 10, "at": "2026-11-20T09:00:00Z"},
                {"rule": "pricing-page", "points": 10, "at": "2026-11-21T10:00:00Z"},
                {"rule": "demo-request", "points": 50, "at": "2026-11-22T10:00:00Z"},
                {"rule": "unsubscribed", "points": -7.5, "at": "2026-11-22T11:00:00Z"},
            ],
        },
        "stage": "sql",
        "stage_history": [
            {"stage": "anonymous", "at": "2026-11-19T08:00:00Z", "cause": "first touchpoint"},
            {"stage": "known", "at": "2026-11-20T09:00:00Z", "cause": "identify"},
            {"stage": "mql", "at": "2026-11-22T10:00:00Z", "cause": "fast track: demo-request"},
            {"stage": "sql", "at": "2026-11-22T10:00:01Z", "cause": "assigned to anna"},
        ],
        "touchpoints": [
            {"event_id": "e1", "type": "page_view", "occurred_at": "2026-11-19T08:00:00Z", "source": "website",
             "properties": {"path": "/blog/lead-scoring"}},
            {"event_id": "e2", "type": "page_view", "occurred_at": "2026-11-21T10:00:00Z", "source": "website",
             "campaign": "q4-webinar", "properties": {"path": "/pricing"}},
            {"event_id": "e3", "type": "form_submit", "occurred_at": "2026-11-22T10:00:00Z", "source": "mautic",
             "properties": {"form": "demo", "results": {"message": "Call me <soon> & \"fast\""}}},
        ],
        "assignment": {"rep_id": "anna", "team": "emea", "reason": "territory DE -> emea; round robin",
                       "assigned_at": "2026-11-22T10:00:01Z"},
        "sla": {"due_at": "2026-11-22T14:00:01Z", "state": "running", "reminders_sent": 0, "breached_at": None},
    }
    doc.update(overrides)
    return doc


def crm(kind: str, url: str, **extra: Any) -> Crm:
    if kind == "webhook":
        return Crm(kind="webhook", url=url, secret_env="CRM_SIGNING_SECRET", **extra)
    return Crm(kind=kind, url=url, token_env="CRM_TOKEN", **extra)  # type: ignore[arg-type]
