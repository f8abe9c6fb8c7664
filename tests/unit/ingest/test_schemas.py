"""The generic touchpoint schema (/v1/touchpoints and /v1/touchpoints/batch) and the generic adapter."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ingest.adapters import generic
from ingest.body import InvalidPayload
from ingest.schemas import (
    MAX_BATCH,
    TouchpointIn,
    _fast_path,
    _from_model,
    normalize_email,
    normalize_type,
    path_from_url,
    to_touchpoints,
)
from services.events import Touchpoint
from tests.unit.ingest.payloads import RECEIVED_AT, load


def _fields(exc: pytest.ExceptionInfo[InvalidPayload]) -> dict[str, str]:
    return {d["field"]: d["message"] for d in exc.value.details}


def test_contract_example_touchpoint_is_normalised() -> None:
    [tp] = to_touchpoints(load("generic_touchpoint.json"), "website", RECEIVED_AT, batch=False)
    assert tp.event_id == "9b2f6a0e-3d4c-4e5f-8a1b-2c3d4e5f6a7b"
    assert tp.type == "page_view"
    assert tp.email == "jane.doe@acme.com"
    assert tp.anonymous_id == "a-123"
    assert tp.occurred_at == datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    assert tp.received_at == RECEIVED_AT
    assert tp.source == "website"
    assert tp.campaign == "q4-webinar"
    assert tp.properties == {"path": "/pricing"}
    assert tp.traits == {"title": "VP Sales", "company": "Acme", "country": "DE"}


def test_source_in_the_body_is_ignored_for_the_authenticated_one() -> None:
    [tp] = to_touchpoints({"type": "x", "email": "a@b.co", "source": "spoofed"}, "website", RECEIVED_AT, False)
    assert tp.source == "website"


def test_batch_fixture() -> None:
    tps = to_touchpoints(load("generic_batch.json"), "website", RECEIVED_AT, batch=True)
    assert [tp.type for tp in tps] == ["page_view", "guide_download", "webinar_attended", "form_submit",
                                       "email_unsubscribe"]
    assert tps[1].occurred_at == datetime(2026, 11, 21, 11, 40, tzinfo=UTC)
    assert tps[2].email == "jane.doe@acme.com"
    assert tps[4].user_id == "4711"


@pytest.mark.parametrize(("raw", "expected"), [("Demo Requested", "demo_requested"), ("page_view", "page_view"),
                                               ("  Webinar - Attended ", "webinar_attended"),
                                               ("E-Mail\tOpen", "e_mail_open"), ("PRICING", "pricing")])
def test_type_names_are_normalised(raw: str, expected: str) -> None:
    assert normalize_type(raw) == expected
    [tp] = to_touchpoints({"type": raw, "user_id": "u"}, "s", RECEIVED_AT, batch=False)
    assert tp.type == expected


def test_email_is_trimmed_lowercased_and_loosely_checked() -> None:
    assert normalize_email("  Jane.Doe+news@ACME.co.uk ") == "jane.doe+news@acme.co.uk"
    for bad in ("jane", "jane@", "@acme.com", "jane@acme", "ja ne@acme.com", "a@b@c.com", 42, None):
        assert normalize_email(bad) is None


def test_occurred_at_defaults_to_received_at_and_naive_means_utc() -> None:
    [tp] = to_touchpoints({"type": "x", "user_id": "u"}, "s", RECEIVED_AT, batch=False)
    assert tp.occurred_at == RECEIVED_AT
    [tp] = to_touchpoints({"type": "x", "user_id": "u", "occurred_at": "2026-11-22T09:00:00"}, "s",
                          RECEIVED_AT, batch=False)
    assert tp.occurred_at == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def test_occurred_at_more_than_a_day_ahead_is_refused() -> None:
    ahead = (RECEIVED_AT + timedelta(days=2)).isoformat()
    with pytest.raises(InvalidPayload) as exc:
        to_touchpoints({"type": "x", "user_id": "u", "occurred_at": ahead}, "s", RECEIVED_AT, batch=False)
    assert "occurred_at" in _fields(exc)


def test_missing_event_id_gets_a_fresh_uuid_each_time() -> None:
    first = to_touchpoints({"type": "x", "user_id": "u"}, "s", RECEIVED_AT, batch=False)[0].event_id
    second = to_touchpoints({"type": "x", "user_id": "u"}, "s", RECEIVED_AT, batch=False)[0].event_id
    assert uuid.UUID(first).version == 4
    assert first != second


def test_identity_is_required() -> None:
    with pytest.raises(InvalidPayload) as exc:
        to_touchpoints({"type": "page_view", "properties": {}}, "s", RECEIVED_AT, batch=False)
    assert _fields(exc) == {"email": "one of email, user_id or anonymous_id is required"}
    assert exc.value.status == 422


def test_every_bad_field_is_named_with_its_batch_path() -> None:
    body: dict[str, Any] = {"touchpoints": [
        {"type": "page_view", "email": "ok@acme.com"},
        {"email": "ok@acme.com"},                                       # no type
        {"type": "x", "email": "not-an-email"},
        {"type": "x", "user_id": "u", "properties": ["not", "an", "object"], "occurred_at": "yesterday"},
        {"type": "x"},                                                  # no identity
        "not an object",
        {"type": "x", "anonymous_id": "a" * 201, "campaign": 7},
        {"type": "alias", "user_id": "u"},
    ]}
    with pytest.raises(InvalidPayload) as exc:
        to_touchpoints(body, "s", RECEIVED_AT, batch=True)
    fields = _fields(exc)
    assert set(fields) == {"touchpoints.1.type", "touchpoints.2.email", "touchpoints.3.properties",
                           "touchpoints.3.occurred_at", "touchpoints.4.email", "touchpoints.5",
                           "touchpoints.6.anonymous_id", "touchpoints.6.campaign", "touchpoints.7.previous_id"}
    assert "valid email" in fields["touchpoints.2.email"]
    assert "ISO 8601" in fields["touchpoints.3.occurred_at"]


def test_batch_limits() -> None:
    one = {"type": "x", "user_id": "u"}
    assert len(to_touchpoints({"touchpoints": [one] * MAX_BATCH}, "s", RECEIVED_AT, batch=True)) == 500
    for body, hint in (({"touchpoints": [one] * (MAX_BATCH + 1)}, "at most 500"),
                       ({"touchpoints": []}, "at least one"), ({"touchpoints": {}}, "array"),
                       ([one], "touchpoints"), ({"type": "x"}, "touchpoints")):
        with pytest.raises(InvalidPayload) as exc:
            to_touchpoints(body, "s", RECEIVED_AT, batch=True)
        assert hint in exc.value.details[0]["message"]
        assert exc.value.details[0]["field"] == "touchpoints"


def test_error_details_are_capped_and_the_message_counts_them() -> None:
    with pytest.raises(InvalidPayload) as exc:
        to_touchpoints({"touchpoints": [{"type": "x"}] * 200}, "s", RECEIVED_AT, batch=True)
    assert len(exc.value.details) == 50
    assert "200 invalid fields" in exc.value.message


def test_single_touchpoint_must_be_an_object() -> None:
    with pytest.raises(InvalidPayload):
        to_touchpoints([{"type": "x", "user_id": "u"}], "s", RECEIVED_AT, batch=False)


def test_generic_adapter_accepts_one_or_a_batch() -> None:
    assert len(generic.parse(load("generic_touchpoint.json"), "website", RECEIVED_AT)) == 1
    assert len(generic.parse(load("generic_batch.json"), "website", RECEIVED_AT)) == 5


def test_path_from_url() -> None:
    assert path_from_url("https://acme.com/pricing?x=1#top") == "/pricing"
    assert path_from_url("https://acme.com") == "/"
    assert path_from_url("/docs/a") == "/docs/a"
    assert path_from_url("pricing") is None
    assert path_from_url("http://[::1") is None


_ids: st.SearchStrategy[Any] = st.sampled_from(
    [None, "", "  ", "id-1", "id-1", "id-1", " id-2 ", "\x1cid", 42, 0, True, 1.5, "x" * 200, "x" * 201, []])
_texts = st.sampled_from(["", " ", "q4", " q4 ", "x" * 200, "x" * 201, None, 7, ["q4"]])
_objects: st.SearchStrategy[Any] = st.sampled_from([{}, {"path": "/pricing"}, {1: "int key"}, None, [], "x"])
touchpoint_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["page_view", " Demo Requested ", "alias", "---", "", " ", "\x1c", "x" * 100,
                              "x" * 101, 5, None]) | st.text(max_size=6)},
    optional={"event_id": _ids, "user_id": _ids, "anonymous_id": _ids, "previous_id": _ids,
              "email": st.sampled_from(["Jane@Acme.com", " a@b.co ", "", "   ", "bad", None, 5,
                                        "x" * 320 + "@a.co"]) | st.emails(),
              "occurred_at": st.sampled_from(["2026-11-22T10:00:00Z", " 2026-11-22T10:00:00+02:00 ", "2026-11-22",
                                              "", "bad", None, 17, "2026-11-22T10:00:00" + " " * 50]),
              "campaign": _texts, "properties": _objects, "traits": _objects},
)


def _slow(item: dict[str, Any]) -> Touchpoint | None:
    try:
        return _from_model(TouchpointIn.model_validate(item), "s", RECEIVED_AT)
    except ValidationError:
        return None


@settings(max_examples=400, deadline=None)
@given(item=touchpoint_like)
def test_fast_path_and_model_agree(item: dict[str, Any]) -> None:
    fast = _fast_path(item, "s", RECEIVED_AT)
    slow = _slow(item)
    assert (fast is None) == (slow is None), (fast, slow)
    if fast is None or slow is None:
        return
    assert fast.model_dump(exclude={"event_id"}) == slow.model_dump(exclude={"event_id"})
    if isinstance(item.get("event_id"), int | str) and str(item["event_id"]).strip():
        assert fast.event_id == slow.event_id


def test_fixture_touchpoints_take_the_fast_path() -> None:
    items = [load("generic_touchpoint.json"), *load("generic_batch.json")["touchpoints"]]
    for item in items:
        fast = _fast_path(item, "s", RECEIVED_AT)
        assert fast is not None and fast == _slow(item), item
