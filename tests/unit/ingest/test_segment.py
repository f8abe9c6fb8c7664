"""Segment HTTP Tracking API payloads -> touchpoints, per the contract's mapping rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingest.adapters import segment
from ingest.body import InvalidPayload
from tests.unit.ingest.payloads import RECEIVED_AT, load


def test_python_client_batch_maps_every_call() -> None:
    tps = segment.parse(load("segment_batch.json"), "segment", RECEIVED_AT)
    assert [tp.type for tp in tps] == ["page_view", "guide_downloaded", "identify", "demo_requested", "alias",
                                       "identify", "screen_view"]
    assert [tp.event_id for tp in tps] == [f"b6a6f0d2-7f7e-4d3c-9a0e-2f0c1b6e9d0{i}" for i in range(1, 8)]
    assert all(tp.source == "segment" and tp.received_at == RECEIVED_AT for tp in tps)
    page, guide, identify, demo, alias, group, screen = tps

    assert page.properties["path"] == "/pricing"  # derived from properties.url
    assert page.properties["url"] == "https://www.acme-analytics.io/pricing?plan=team"
    assert page.properties["name"] == "Pricing"
    assert page.properties["referrer"] == "https://www.linkedin.com/"  # from context.page
    assert page.campaign == "q4-webinar"
    assert page.anonymous_id == "5e1a7c44-1f0b-4c55-9a43-3f1d2c9a8b11"
    assert page.user_id is None
    assert page.occurred_at == datetime(2026, 11, 22, 9, 58, 12, 120000, tzinfo=UTC)

    assert guide.properties == {"guide": "lead-scoring-101", "format": "pdf"}

    # identify links userId, anonymousId and the (normalised) email, and records the traits
    assert (identify.user_id, identify.anonymous_id, identify.email) == (
        "crm-0042", "5e1a7c44-1f0b-4c55-9a43-3f1d2c9a8b11", "jane.doe@acme.com")
    assert identify.traits["title"] == "VP Sales"
    assert identify.traits["country"] == "DE"

    assert demo.email == "jane.doe@acme.com"  # context.traits.email
    assert demo.properties == {"form": "demo", "seats": 25}

    assert (alias.previous_id, alias.user_id) == ("5e1a7c44-1f0b-4c55-9a43-3f1d2c9a8b11", "crm-0042")

    assert group.traits == {"group_id": "acct-981", "company": "Acme GmbH", "website": "https://acme.com",
                            "industry": "Software", "employees": 420}
    assert screen.properties == {"step": 2, "name": "Onboarding Checklist"}


def test_track_name_normalisation() -> None:
    for event, expected in (("Demo Requested", "demo_requested"), ("Pricing-Page Viewed", "pricing_page_viewed"),
                            ("signup", "signup")):
        [tp] = segment.parse({"type": "track", "event": event, "userId": "u"}, "segment", RECEIVED_AT)
        assert tp.type == expected


def test_original_timestamp_is_corrected_by_sent_at_like_segment_does() -> None:
    # Device clock: originalTimestamp 10:00:00.000, sentAt 10:00:00.500 -> happened 0.5 s before receipt.
    [tp] = segment.parse(load("segment_track_browser.json"), "segment", RECEIVED_AT)
    assert tp.type == "webinar_registered"
    assert tp.occurred_at == RECEIVED_AT - timedelta(milliseconds=500)
    assert tp.campaign == "spring-launch"
    assert tp.event_id == "ajs-next-2c4b1f0e8a7d4f0c9b1e5d3a7c6b2f10"
    assert tp.properties == {"webinar": "lead-scoring-that-sales-trusts", "date": "2026-12-03"}


def test_browser_page_keeps_path_and_url() -> None:
    [tp] = segment.parse(load("segment_page_browser.json"), "segment", RECEIVED_AT)
    assert tp.type == "page_view"
    assert tp.properties["path"] == "/pricing"
    assert tp.properties["url"] == "https://acme-analytics.io/pricing"
    assert tp.occurred_at == datetime(2026, 11, 22, 10, 4, tzinfo=UTC)


def test_page_path_comes_from_context_page_when_properties_lack_it() -> None:
    body = {"type": "page", "anonymousId": "a1", "properties": {},
            "context": {"page": {"url": "https://acme.com/pricing/teams?x=1"}}}
    [tp] = segment.parse(body, "segment", RECEIVED_AT)
    assert tp.properties == {"url": "https://acme.com/pricing/teams?x=1", "path": "/pricing/teams"}


def test_identify_with_numeric_user_id_and_mixed_case_email() -> None:
    [tp] = segment.parse(load("segment_identify.json"), "segment", RECEIVED_AT, kind="identify")
    assert (tp.type, tp.user_id, tp.email) == ("identify", "97980", "peter.gibbons@initech.com")
    assert tp.traits["title"] == "Head of Operations"


def test_alias_endpoint() -> None:
    [tp] = segment.parse(load("segment_alias.json"), "segment", RECEIVED_AT, kind="alias")
    assert (tp.type, tp.previous_id, tp.user_id) == ("alias", "f3c2a1b0-77aa-4c1e-8d0b-9a9e11c0ffee", "97980")


def test_single_endpoint_gives_the_type_when_the_body_has_none() -> None:
    body = {"event": "Trial Started", "userId": "u1", "messageId": "m-1"}
    [tp] = segment.parse(body, "segment", RECEIVED_AT, kind="track")
    assert tp.type == "trial_started"
    with pytest.raises(InvalidPayload) as exc:
        segment.parse(body, "segment", RECEIVED_AT)
    assert exc.value.details[0]["field"] == "type"


def test_batch_endpoint_with_shared_context() -> None:
    body = {"batch": [{"type": "track", "event": "A", "userId": "u"}],
            "context": {"campaign": {"name": "shared"}}}
    [tp] = segment.parse(body, "segment", RECEIVED_AT, kind="batch")
    assert tp.campaign == "shared"


def test_missing_message_id_gets_a_generated_id() -> None:
    first = segment.parse({"type": "track", "event": "A", "userId": "u"}, "segment", RECEIVED_AT)[0]
    second = segment.parse({"type": "track", "event": "A", "userId": "u"}, "segment", RECEIVED_AT)[0]
    assert first.event_id != second.event_id


def test_bad_timestamp_falls_back_to_receipt_time_and_future_is_clamped() -> None:
    [tp] = segment.parse({"type": "track", "event": "A", "userId": "u", "timestamp": "soon"}, "s", RECEIVED_AT)
    assert tp.occurred_at == RECEIVED_AT
    far = (RECEIVED_AT + timedelta(days=30)).isoformat()
    [tp] = segment.parse({"type": "track", "event": "A", "userId": "u", "timestamp": far}, "s", RECEIVED_AT)
    assert tp.occurred_at == RECEIVED_AT


def test_batch_errors_name_each_bad_message_field() -> None:
    body: dict[str, Any] = {"batch": [
        {"type": "track", "event": "Fine", "userId": "u"},
        {"type": "track", "userId": "u"},                              # no event
        {"type": "teleport", "userId": "u"},                           # unknown type
        {"type": "page", "properties": {"path": "/x"}},                # no identity
        {"type": "alias", "userId": "u"},                              # no previousId
        {"type": "identify", "userId": "u", "traits": "vip"},          # traits not an object
        [1, 2],
        {"type": "group", "userId": "u"},                              # no groupId
    ]}
    with pytest.raises(InvalidPayload) as exc:
        segment.parse(body, "segment", RECEIVED_AT)
    assert {d["field"] for d in exc.value.details} == {
        "batch.1.event", "batch.2.type", "batch.3.userId", "batch.4.previousId", "batch.5.traits", "batch.6",
        "batch.7.groupId"}


@pytest.mark.parametrize("body", [[], "track", None, {"batch": "x"}, {"batch": None}])
def test_non_message_bodies_are_invalid(body: Any) -> None:
    with pytest.raises(InvalidPayload):
        segment.parse(body, "segment", RECEIVED_AT)
