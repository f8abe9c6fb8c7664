"""CRM request building (pure): webhook, HubSpot, Salesforce shapes, keys, signatures, placeholders."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.crm import (
    LeadDocumentError,
    MissingSecret,
    build_crm_requests,
    render_timeline,
)
from notifier.crm.hubspot import CONTACT_ID
from notifier.crm.outbound import json_bytes, resolve
from notifier.crm.salesforce import LEAD_ID, rating
from services.signing import verify

from .samples import ASSIGNMENT_ID, ENV, SECRET, TOKEN, crm, lead

TS = 1_795_000_000


def test_webhook_request_is_signed_keyed_and_carries_the_whole_lead() -> None:
    doc = lead()
    config = crm("webhook", "http://crm.test/leads")
    [request] = build_crm_requests(config, doc, ASSIGNMENT_ID, environ=ENV, timestamp=TS)
    assert (request.method, request.url) == ("POST", "http://crm.test/leads")
    assert request.header("Idempotency-Key") == f"lead-42:{ASSIGNMENT_ID}"
    assert request.header("content-type") == "application/json"
    assert verify(request.body, request.header("X-Handoff-Signature"), [SECRET], now=TS) is None
    assert verify(request.body, request.header("X-Handoff-Signature"), ["other"], now=TS) is not None
    body = request.json()
    assert set(body) == {"lead", "score", "stage_history", "touchpoints", "assignment", "sla"}
    assert body["lead"] == doc
    assert body["score"] == doc["score"]
    assert body["stage_history"] == doc["stage_history"]
    assert body["touchpoints"] == doc["touchpoints"]
    assert body["assignment"] == {**doc["assignment"], "assignment_id": ASSIGNMENT_ID}
    assert body["sla"]["due_at"] == "2026-11-22T14:00:01Z"


def test_webhook_uses_the_first_of_several_rotated_secrets() -> None:
    env = {"CRM_SIGNING_SECRET": " new-secret , old-secret"}
    [request] = build_crm_requests(crm("webhook", "http://x/"), lead(), "a", environ=env, timestamp=TS)
    assert verify(request.body, request.header("X-Handoff-Signature"), ["new-secret"], now=TS) is None


@pytest.mark.parametrize("kind", ["webhook", "hubspot", "salesforce"])
def test_missing_secret_says_which_variable_to_set(kind: str) -> None:
    with pytest.raises(MissingSecret, match=r"export CRM_(SIGNING_SECRET|TOKEN)="):
        build_crm_requests(crm(kind, "http://x"), lead(), "a", environ={}, timestamp=TS)


def test_hubspot_upserts_the_contact_then_notes_the_timeline() -> None:
    contact, note = build_crm_requests(
        crm("hubspot", "https://api.hubapi.test/"), lead(), ASSIGNMENT_ID, environ=ENV, timestamp=TS,
        owner_ids={"anna": "31337"},
    )
    assert (contact.method, contact.url) == ("POST", "https://api.hubapi.test/crm/v3/objects/contacts/batch/upsert")
    assert contact.header("Authorization") == f"Bearer {TOKEN}"
    assert contact.header("Idempotency-Key") == f"lead-42:{ASSIGNMENT_ID}:contact"
    [item] = contact.json()["inputs"]
    assert item["id"] == "jane.doe@acme.com" and item["idProperty"] == "email"
    props = item["properties"]
    assert props["email"] == "jane.doe@acme.com"
    assert props["hubspot_owner_id"] == "31337"
    assert [props[k] for k in ("firstname", "lastname", "jobtitle", "company")] == ["Jane", "Doe", "VP Sales", "Acme"]
    assert [props[f"handoff_{k}"] for k in ("score", "fit_score", "engagement_score")] == ["92.5", "30", "62.5"]
    assert (note.method, note.url) == ("POST", "https://api.hubapi.test/crm/v3/objects/notes")
    assert note.header("Idempotency-Key") == f"lead-42:{ASSIGNMENT_ID}:note"
    body = note.json()
    assert body["properties"]["hs_timestamp"] == "2026-11-22T10:00:01Z"
    assert body["properties"]["hubspot_owner_id"] == "31337"
    assert "demo-request" in body["properties"]["hs_note_body"]
    assert body["associations"] == [
        {"to": {"id": CONTACT_ID}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}
    ]
    # The note's placeholder is filled from the upsert's answer.
    filled = resolve(note, [{"results": [{"id": "901", "properties": {}}]}, None])
    assert filled.json()["associations"][0]["to"]["id"] == "901"
    assert CONTACT_ID.encode() not in filled.body


def test_hubspot_owner_passes_through_without_a_mapping_and_needs_an_email() -> None:
    [contact, _] = build_crm_requests(crm("hubspot", "https://h"), lead(), "a", environ=ENV, timestamp=TS)
    assert contact.json()["inputs"][0]["properties"]["hubspot_owner_id"] == "anna"
    with pytest.raises(LeadDocumentError, match="no email address"):
        build_crm_requests(crm("hubspot", "https://h"), lead(emails=[]), "a", environ=ENV, timestamp=TS)


def test_salesforce_upserts_the_lead_by_external_id_then_creates_a_task() -> None:
    upsert, task = build_crm_requests(
        crm("salesforce", "https://acme.my.salesforce.test"), lead(), ASSIGNMENT_ID, environ=ENV, timestamp=TS
    )
    assert upsert.method == "PATCH"
    assert upsert.url == "https://acme.my.salesforce.test/services/data/v60.0/sobjects/Lead/Handoff_Lead_Id__c/lead-42"
    assert upsert.header("Authorization") == f"Bearer {TOKEN}"
    assert upsert.header("Idempotency-Key") == f"lead-42:{ASSIGNMENT_ID}:lead"
    fields = upsert.json()
    assert fields == {
        "FirstName": "Jane", "LastName": "Doe", "Company": "Acme", "Email": "jane.doe@acme.com",
        "Title": "VP Sales", "Country": "DE", "LeadSource": "Web", "OwnerId": "anna", "Rating": "Hot",
        "Handoff_Score__c": 92.5,
    }
    assert (task.method, task.url) == ("POST", "https://acme.my.salesforce.test/services/data/v60.0/sobjects/Task")
    assert task.header("Idempotency-Key") == f"lead-42:{ASSIGNMENT_ID}:task"
    body = task.json()
    assert body["WhoId"] == LEAD_ID
    assert body["ActivityDate"] == "2026-11-22" and body["Priority"] == "High" and body["OwnerId"] == "anna"
    assert "/pricing" in body["Description"]
    assert resolve(task, [{"id": "00Q5e00000AbCdE", "success": True}]).json()["WhoId"] == "00Q5e00000AbCdE"


def test_salesforce_fills_required_fields_and_custom_external_id() -> None:
    doc = lead(traits={}, company_domain=None, emails=["x@y.com"])
    upsert, _ = build_crm_requests(
        crm("salesforce", "https://sf", external_id_field="Ext Id/__c"), doc, "a", environ=ENV, timestamp=TS
    )
    assert upsert.url.endswith("/sobjects/Lead/Ext%20Id%2F__c/lead-42")
    assert upsert.json()["LastName"] == "x" and upsert.json()["Company"] == "[not provided]"
    assert [rating(v) for v in (80, 79.9, 40, 39, None, "n/a")] == ["Hot", "Warm", "Warm", "Cold", "Cold", "Cold"]


def test_lead_without_id_is_refused() -> None:
    with pytest.raises(LeadDocumentError, match="no 'id'"):
        build_crm_requests(crm("webhook", "http://x"), lead(id=None), "a", environ=ENV, timestamp=TS)


def test_timeline_text_shows_who_why_and_what() -> None:
    text = render_timeline(lead())
    assert text.startswith("Lead lead-42: Jane Doe <jane.doe@acme.com>")
    assert "Assigned to anna (team emea) at 2026-11-22T10:00:01Z: territory DE -> emea; round robin" in text
    assert "First touch due by 2026-11-22T14:00:01Z" in text
    assert "Score 92.5 (fit 30, engagement 62.5):" in text
    assert "  +50 demo-request (2026-11-22T10:00:00Z)" in text and "  -7.5 unsubscribed" in text
    assert "  2026-11-22T10:00:00Z mql (fast track: demo-request)" in text
    assert text.index("/blog/lead-scoring") < text.index("/pricing")  # oldest first
    assert "  2026-11-21T10:00:00Z page_view /pricing [website, q4-webinar]" in text


def test_timeline_leaves_out_the_oldest_touchpoints_when_too_long() -> None:
    many = [{"type": "page_view", "occurred_at": f"2026-11-{1 + i // 100:02d}T00:00:{i % 60:02d}Z",
             "properties": {"path": f"/p/{i}"}} for i in range(2000)]
    text = render_timeline(lead(touchpoints=many), limit=5000)
    assert len(text) <= 5000
    assert "/p/1999" in text and "/p/0 " not in text
    assert "earlier touchpoint(s) left out" in text


@settings(max_examples=150, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
), st.sampled_from(["webhook", "hubspot", "salesforce"]))
def test_odd_lead_documents_never_crash_the_builders(junk: Any, kind: str) -> None:
    """Every part of the document may be missing or oddly typed; the builders take what is there."""
    keys = ["traits", "score", "stage_history", "touchpoints", "assignment", "sla", "company_domain"]
    doc: dict[str, Any] = {"id": "L1", "emails": ["a@b.c"]}
    for i, key in enumerate(keys):
        if (isinstance(junk, dict) and i % 2 == 0) or isinstance(junk, list):
            doc[key] = junk
    requests = build_crm_requests(crm(kind, "http://x"), doc, "a", environ=ENV, timestamp=TS)
    assert requests
    for request in requests:
        orjson.loads(request.body)
        assert (request.header("Idempotency-Key") or "").startswith("L1:a")


def _not_json(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


def test_wire_json_is_json_even_with_integers_orjson_refuses_and_infinite_floats() -> None:
    # Beyond 64 bits orjson raises and the standard library takes over; both must write null for inf/NaN.
    body = json_bytes({"big": -9223372036854775809, "inf": float("inf"), "nested": [float("nan"), (1.5,)]})
    assert json.loads(body, parse_constant=_not_json) == {"big": -9223372036854775809, "inf": None,
                                                           "nested": [None, [1.5]]}
    assert orjson.loads(json_bytes({"inf": float("-inf")})) == {"inf": None}
