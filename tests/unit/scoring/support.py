"""Shared rules, touchpoint builder and hypothesis strategies for the scoring tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from scoring.rules import RuleSet
from services.config import Scoring

T0 = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)

SCORING = Scoring.model_validate({
    "decay_half_life_days": 30,
    "engagement": [
        {"name": "pricing-page", "when": {"type": "page_view", "properties.path": {"prefix": "/pricing"}},
         "points": 10, "max_per_day": 2},
        {"name": "any-page", "when": {"type": "page_view"}, "points": 1, "max_per_day": 3},
        {"name": "demo-request", "when": {"type": "form_submit", "properties.form": "demo"}, "points": 50},
        {"name": "unsubscribed", "when": {"type": "email_unsubscribe"}, "points": -25},
        {"name": "spam-complaint", "when": {"type": "email_unsubscribe", "properties.reason": "spam"},
         "points": -5, "max_per_day": 1},
        {"name": "big-deal", "when": {"properties.amount": {"gte": 1000}}, "points": 7},
    ],
    "fit": [
        {"name": "senior-title", "when": {"traits.title": {"regex": "(?i)\\b(vp|head|chief)\\b"}},
         "points": 20},
        {"name": "target-size", "when": {"traits.employees": {"gte": 50}}, "points": 10},
        {"name": "free-mail", "when": {"traits.email_domain": {"in": ["gmail.com", "yahoo.com"]}},
         "points": -15},
        {"name": "known-company", "when": {"traits.company_domain": {"exists": True}}, "points": 5},
    ],
})


def rules() -> RuleSet:
    return RuleSet.from_config(SCORING)


def touch(event_id: str, at: datetime | str, type: str = "page_view", **fields: Any) -> dict[str, Any]:
    """A touchpoint as ``Touchpoint.model_dump(mode="json")`` gives it."""
    occurred = at if isinstance(at, str) else at.isoformat().replace("+00:00", "Z")
    tp: dict[str, Any] = {"event_id": event_id, "type": type, "occurred_at": occurred,
                          "received_at": occurred, "source": "website", "email": None, "user_id": None,
                          "anonymous_id": "a-1", "previous_id": None, "campaign": None,
                          "properties": {}, "traits": {}}
    tp.update(fields)
    return tp


@st.composite
def touchpoint_bodies(draw: st.DrawFn, event_id: str) -> dict[str, Any]:
    """A random touchpoint over three days, so caps, negative rules, several matches and traits occur."""
    at = T0 + timedelta(minutes=draw(st.integers(0, 3 * 24 * 60 - 1)))
    kind = draw(st.sampled_from(["pricing", "page", "demo", "unsub", "spam", "deal", "identify"]))
    if kind == "pricing":
        tp = touch(event_id, at, properties={"path": draw(st.sampled_from(["/pricing", "/pricing/teams"]))})
    elif kind == "page":
        tp = touch(event_id, at, properties={"path": "/blog/x"})
    elif kind == "demo":
        tp = touch(event_id, at, "form_submit", properties={"form": "demo"})
    elif kind == "unsub":
        tp = touch(event_id, at, "email_unsubscribe")
    elif kind == "spam":
        tp = touch(event_id, at, "email_unsubscribe", properties={"reason": "spam"})
    elif kind == "deal":
        tp = touch(event_id, at, "form_submit", properties={"amount": draw(st.sampled_from([10, 5000]))})
    else:
        tp = touch(event_id, at, "identify")
    if draw(st.booleans()):
        tp["traits"] = draw(st.dictionaries(
            st.sampled_from(["title", "employees", "country", "website", "company_domain"]),
            st.sampled_from(["VP Sales", "Intern", 10, 80, "DE", "acme.com", "https://www.initech.io/x", None]),
            max_size=3,
        ))
    if draw(st.booleans()):
        tp["email"] = draw(st.sampled_from(["Jane@Acme.com", "jane@gmail.com", " JANE@Initech.IO "]))
    return tp


@st.composite
def histories(draw: st.DrawFn, min_size: int = 0, max_size: int = 25) -> list[dict[str, Any]]:
    """Touchpoints with unique event ids (what an id means: one touchpoint, one content)."""
    n = draw(st.integers(min_size, max_size))
    return [draw(touchpoint_bodies(f"e{i:03d}")) for i in range(n)]
