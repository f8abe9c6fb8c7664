"""Sales feedback: POST /v1/leads/{id}/feedback and the signed CRM callback, checked in the database."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from services.db.database import Database
from services.db.models import assignments, feedback, lead_sla, leads, outbox, sla_timers, stage_history
from services.events import LEAD_FEEDBACK, utcnow
from services.feedback import FeedbackError, decide
from services.signing import sign
from tests.support.leadfactory import T0, add_handed_lead, add_lead, bearer, sales_api

AUTH = bearer("test-token")
SECRET = "crm-s3cret"


async def _handed(db: Database, email: str = "jane@acme.com", *, due_in: timedelta = timedelta(hours=3),
                  stage: str = "sql") -> str:
    now = utcnow()
    async with db.transaction() as conn:
        lead, _ = await add_handed_lead(conn, email=email, assigned_at=now - timedelta(hours=1),
                                        due_at=now + due_in, stage=stage)
    return lead


async def _state(db: Database, lead: str) -> dict[str, Any]:
    async with db.read() as conn:
        row = (await conn.execute(select(leads).where(leads.c.id == lead))).mappings().one()
        history = (await conn.execute(select(stage_history).where(stage_history.c.lead_id == lead)
                                      .order_by(stage_history.c.id))).mappings().all()
        sla = (await conn.execute(select(lead_sla).where(lead_sla.c.lead_id == lead))).mappings().first()
        query = select(sla_timers.c.status).where(sla_timers.c.lead_id == lead)
        timers = (await conn.execute(query)).scalars()
        fb = (await conn.execute(select(feedback).where(feedback.c.lead_id == lead)
                                 .order_by(feedback.c.id))).mappings().all()
        events = (await conn.execute(select(outbox).where(outbox.c.key == lead))).mappings().all()
        open_assignments = (await conn.execute(
            select(assignments.c.id).where(assignments.c.lead_id == lead, assignments.c.ended_at.is_(None))
        )).scalars().all()
        return {"lead": row, "history": history, "sla": sla, "timers": sorted(timers), "feedback": fb,
                "events": events, "open_assignments": open_assignments}


async def test_contacted_in_time_stops_the_clock_as_met(database_url: str, db: Database) -> None:
    lead = await _handed(db)
    async with sales_api(database_url) as (client, _):
        r = await client.post(f"/v1/leads/{lead}/feedback", json={"type": "contacted", "rep_id": "anna"},
                              headers=AUTH)
    assert r.status_code == 202, r.text
    assert r.json() == {"lead_id": lead, "stage": "contacted"}
    s = await _state(db, lead)
    assert s["lead"]["stage"] == "contacted" and s["lead"]["contacted_at"] is not None
    last = s["history"][-1]
    assert (last["from_stage"], last["to_stage"]) == ("sql", "contacted")
    assert last["cause"] == "feedback: contacted by anna"
    assert s["sla"]["state"] == "met" and s["sla"]["stopped_at"] is not None
    assert s["sla"]["breached_at"] is None
    assert s["timers"] == ["cancelled", "cancelled"]
    assert [(f["type"], f["rep_id"], f["channel"]) for f in s["feedback"]] == [("contacted", "anna", "api")]
    [event] = s["events"]
    assert event["type"] == LEAD_FEEDBACK and event["topic"] == "lead-events"
    assert event["data"]["type"] == "contacted" and event["data"]["lead_id"] == lead
    assert event["data"]["stage"] == "contacted" and event["data"]["previous_stage"] == "sql"


async def test_contact_after_the_due_time_leaves_the_sla_breached(database_url: str, db: Database) -> None:
    lead = await _handed(db, due_in=-timedelta(minutes=10))
    async with sales_api(database_url) as (client, _):
        r = await client.post(f"/v1/leads/{lead}/feedback", json={"type": "contacted"}, headers=AUTH)
    assert r.status_code == 202
    s = await _state(db, lead)
    assert s["sla"]["state"] == "breached" and s["sla"]["breached_at"] == s["sla"]["due_at"]
    assert s["feedback"][0]["rep_id"] == "anna"  # defaults to the owner


async def test_the_same_feedback_twice_keeps_the_first_time(database_url: str, db: Database) -> None:
    lead = await _handed(db)
    first_at = (utcnow() - timedelta(minutes=30)).isoformat()
    async with sales_api(database_url) as (client, _):
        one = await client.post(f"/v1/leads/{lead}/feedback", json={"type": "contacted", "at": first_at},
                                headers=AUTH)
        two = await client.post(f"/v1/leads/{lead}/feedback", json={"type": "contacted"}, headers=AUTH)
    assert one.status_code == two.status_code == 202 and two.json()["stage"] == "contacted"
    s = await _state(db, lead)
    assert [h["to_stage"] for h in s["history"]] == ["mql", "sql", "contacted"]
    assert s["lead"]["stage_changed_at"] == datetime.fromisoformat(first_at)
    assert s["lead"]["contacted_at"] == datetime.fromisoformat(first_at)
    assert len(s["feedback"]) == 1 and len(s["events"]) == 1


async def test_rejection_needs_a_reason_and_recycles_the_lead(database_url: str, db: Database) -> None:
    lead = await _handed(db)
    async with sales_api(database_url) as (client, _):
        missing = await client.post(f"/v1/leads/{lead}/feedback", json={"type": "rejected"}, headers=AUTH)
        blank = await client.post(f"/v1/leads/{lead}/feedback", json={"type": "rejected", "reason": "  "},
                                  headers=AUTH)
        ok = await client.post(f"/v1/leads/{lead}/feedback",
                               json={"type": "rejected", "rep_id": "anna", "reason": "budget"}, headers=AUTH)
        again = await client.post(f"/v1/leads/{lead}/feedback", json={"type": "contacted"}, headers=AUTH)
    for refused in (missing, blank):
        assert refused.status_code == 422
        assert refused.json()["error"]["details"][0]["field"] == "reason"
    assert ok.status_code == 202 and ok.json()["stage"] == "recycled"
    assert again.status_code == 409 and "recycled" in again.json()["error"]["message"]
    s = await _state(db, lead)
    assert s["lead"]["stage"] == "recycled" and s["lead"]["contacted_at"] is None
    assert s["history"][-1]["cause"] == "feedback: rejected by anna (budget)"
    assert s["sla"]["state"] == "met" and s["timers"] == ["cancelled", "cancelled"]
    assert s["open_assignments"] == []  # the rep no longer holds it
    assert [(f["type"], f["reason"]) for f in s["feedback"]] == [("rejected", "budget")]


async def test_accepted_then_won_and_illegal_moves_are_409(database_url: str, db: Database) -> None:
    lead = await _handed(db)
    async with db.transaction() as conn:
        early = await add_lead(conn, email="early@x.com", stage="mql", qualified_at=T0)
    async with sales_api(database_url) as (client, _):
        won_early = await client.post(f"/v1/leads/{early}/feedback", json={"type": "won"}, headers=AUTH)
        accepted = await client.post(f"/v1/leads/{lead}/feedback", json={"type": "accepted"}, headers=AUTH)
        late_contact = await client.post(f"/v1/leads/{lead}/feedback", json={"type": "contacted"},
                                         headers=AUTH)
        rejected = await client.post(f"/v1/leads/{lead}/feedback", json={"type": "rejected", "reason": "x"},
                                     headers=AUTH)
        won = await client.post(f"/v1/leads/{lead}/feedback", json={"type": "won"}, headers=AUTH)
        lost = await client.post(f"/v1/leads/{lead}/feedback", json={"type": "lost"}, headers=AUTH)
        unknown = await client.post("/v1/leads/nope/feedback", json={"type": "won"}, headers=AUTH)
        bad_type = await client.post(f"/v1/leads/{lead}/feedback", json={"type": "maybe"}, headers=AUTH)
        future = await client.post(f"/v1/leads/{lead}/feedback",
                                   json={"type": "won", "at": (utcnow() + timedelta(days=1)).isoformat()},
                                   headers=AUTH)
    assert won_early.status_code == 409 and "never assigned" in won_early.json()["error"]["message"]
    assert accepted.json()["stage"] == "opportunity"
    assert late_contact.status_code == 202 and late_contact.json()["stage"] == "opportunity"
    assert rejected.status_code == 409 and "'lost'" in rejected.json()["error"]["message"]
    assert won.status_code == 202 and won.json()["stage"] == "won"
    assert lost.status_code == 409 and "won" in lost.json()["error"]["message"]
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "lead_not_found"
    assert bad_type.status_code == 422 and bad_type.json()["error"]["details"][0]["field"] == "type"
    assert future.status_code == 422 and future.json()["error"]["details"][0]["field"] == "at"
    s = await _state(db, lead)
    assert [h["to_stage"] for h in s["history"]] == ["mql", "sql", "opportunity", "won"]
    assert [f["type"] for f in s["feedback"]] == ["accepted", "contacted", "won"]
    assert s["lead"]["contacted_at"] is not None and s["sla"]["state"] == "met"
    async with db.read() as conn:
        early_row = (await conn.execute(select(leads.c.stage).where(leads.c.id == early))).scalar_one()
    assert early_row == "mql"


@pytest.mark.parametrize(("stage", "kind", "expected"), [
    ("sql", "contacted", ("contacted", True)), ("sql", "accepted", ("opportunity", True)),
    ("contacted", "rejected", ("recycled", True)), ("contacted", "won", ("won", True)),
    ("opportunity", "lost", ("lost", True)), ("contacted", "contacted", ("contacted", False)),
    ("won", "contacted", ("won", False)), ("recycled", "rejected", ("recycled", False)),
    ("engaged", "contacted", 409), ("mql", "won", 409), ("disqualified", "accepted", 409),
    ("won", "lost", 409), ("lost", "rejected", 409), ("opportunity", "rejected", 409),
    ("recycled", "won", 409), ("sql", "maybe", 422),
])
def test_decide_table(stage: str, kind: str, expected: tuple[str, bool] | int) -> None:
    if isinstance(expected, int):
        with pytest.raises(FeedbackError) as caught:
            decide(stage, kind)
        assert caught.value.status == expected and caught.value.message
    else:
        decision = decide(stage, kind)
        assert (decision.stage, decision.changed) == expected


def _signed(body: dict[str, Any], secret: str = SECRET, at: int | None = None
            ) -> tuple[bytes, dict[str, str]]:
    raw = orjson.dumps(body)
    header = sign(raw, secret, int(time.time()) if at is None else at)
    return raw, {"X-Handoff-Signature": header, "Content-Type": "application/json"}


async def test_crm_callback_checks_the_signature(
    database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_SIGNING_SECRET", f"old-secret,{SECRET}")
    lead = await _handed(db, email="jane@acme.com")
    event = {"email": " Jane@ACME.com", "type": "contacted", "rep_id": "anna"}
    async with sales_api(database_url) as (client, _):
        wrong_raw, wrong_headers = _signed(event, secret="guess")
        wrong = await client.post("/webhooks/crm/webhook", content=wrong_raw, headers=wrong_headers)
        stale_raw, stale_headers = _signed(event, at=int(time.time()) - 3600)
        stale = await client.post("/webhooks/crm/webhook", content=stale_raw, headers=stale_headers)
        unsigned = await client.post("/webhooks/crm/webhook", content=orjson.dumps(event))
        other_kind = await client.post("/webhooks/crm/hubspot", content=wrong_raw, headers=wrong_headers)
        assert (await _state(db, lead))["lead"]["stage"] == "sql"  # nothing applied by refused calls
        raw, headers = _signed(event)
        good = await client.post("/webhooks/crm/webhook", content=raw, headers=headers)
        raw, headers = _signed({"lead_id": lead, "type": "accepted"}, secret="old-secret")
        rotated = await client.post("/webhooks/crm/webhook", content=raw, headers=headers)
    for refused in (wrong, stale, unsigned):
        assert refused.status_code == 401, refused.text
    assert "300 s" in stale.json()["error"]["message"]
    assert other_kind.status_code == 404 and "/webhooks/crm/webhook" in other_kind.json()["error"]["message"]
    assert good.status_code == 202 and good.json() == {"lead_id": lead, "stage": "contacted"}
    assert rotated.status_code == 202 and rotated.json()["stage"] == "opportunity"
    s = await _state(db, lead)
    assert [(f["type"], f["channel"]) for f in s["feedback"]] == [("contacted", "crm:webhook"),
                                                                  ("accepted", "crm:webhook")]
    assert s["history"][-2]["cause"] == "feedback: contacted by anna via crm:webhook"
    assert s["sla"]["state"] == "met"
    assert {e["source"] for e in s["events"]} == {"crm/webhook"}


async def test_crm_callback_batches_and_bad_bodies(
    database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_SIGNING_SECRET", SECRET)
    one = await _handed(db, email="one@acme.com")
    two = await _handed(db, email="two@acme.com")
    batch = {"events": [{"lead_id": one, "type": "contacted"}, {"email": "ghost@acme.com", "type": "won"},
                        {"lead_id": two, "type": "rejected", "reason": "student"}]}
    async with sales_api(database_url) as (client, _):
        raw, headers = _signed(batch)
        r = await client.post("/webhooks/crm/webhook", content=raw, headers=headers)
        raw, headers = _signed({"events": [{"type": "won"}, {"lead_id": one, "type": "nope"}]})
        invalid = await client.post("/webhooks/crm/webhook", content=raw, headers=headers)
        raw = b"not json"
        not_json = await client.post("/webhooks/crm/webhook", content=raw,
                                     headers={"X-Handoff-Signature": sign(raw, SECRET, int(time.time()))})
        raw, headers = _signed({"lead_id": "nope", "type": "contacted"})
        missing = await client.post("/webhooks/crm/webhook", content=raw, headers=headers)
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["applied"], body["failed"]) == (2, 1)
    assert body["results"][0] == {"index": 0, "lead_id": one, "stage": "contacted"}
    assert body["results"][1]["error"]["status"] == 404
    assert body["results"][2]["stage"] == "recycled"
    assert invalid.status_code == 422
    fields = {d["field"] for d in invalid.json()["error"]["details"]}
    assert fields == {"events.0", "events.1.type"}
    assert not_json.status_code == 400 and missing.status_code == 404
    assert (await _state(db, two))["feedback"][0]["reason"] == "student"
