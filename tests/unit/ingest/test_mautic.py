"""Mautic webhooks, queued mode with several event types and several events each."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ingest.adapters import mautic
from ingest.body import InvalidPayload
from services.events import Touchpoint
from tests.unit.ingest.payloads import RECEIVED_AT, load


def _by_id(tps: list[Touchpoint]) -> dict[str, Touchpoint]:
    return {tp.event_id: tp for tp in tps}


def test_queued_body_yields_one_touchpoint_per_mapped_event() -> None:
    tps = _by_id(mautic.parse(load("mautic_queued.json"), "mautic", RECEIVED_AT))
    page_without_id = next(k for k in tps if k.startswith("mautic:page_on_hit:h"))
    assert set(tps) == {
        "mautic:form_on_submit:871", "mautic:form_on_submit:872",
        "mautic:page_on_hit:55120", page_without_id,
        "mautic:email_on_open:3307:2",
        "mautic:lead_channel_subscription_changed:1043:email:2026-11-22T09:20:00+00:00",
        "mautic:lead_post_save_new:1043",
        "mautic:lead_post_save_update:1042:2026-11-22T10:02:45+00:00",
    }  # the bounced status change and email_on_send make no touchpoint
    assert all(tp.source == "mautic" for tp in tps.values())


def test_form_submit_mapping() -> None:
    tp = _by_id(mautic.parse(load("mautic_queued.json"), "mautic", RECEIVED_AT))["mautic:form_on_submit:872"]
    assert tp.type == "form_submit"
    assert tp.properties["form"] == "demo"  # the form's alias
    assert tp.properties["form_name"] == "Demo request"
    assert tp.properties["results"] == {"email": "jane.doe@acme.com", "seats": "25",
                                        "message": "We need routing by territory"}
    assert tp.properties["path"] == "/demo"
    assert tp.email == "jane.doe@acme.com"  # from lead.fields.core.email.value, lower-cased
    assert tp.user_id == "mautic:1042"
    assert tp.occurred_at == datetime(2026, 11, 22, 10, 2, 44, tzinfo=UTC)
    assert tp.traits["title"] == "VP Sales"  # Mautic's "position"
    assert tp.traits["salutation"] == "Ms."
    assert tp.traits["first_name"] == "Jane"
    assert tp.traits["company"] == "Acme GmbH"
    assert "email" not in tp.traits and "points" not in tp.traits and "phone" not in tp.traits


def test_page_hit_mapping() -> None:
    tps = mautic.parse(load("mautic_queued.json"), "mautic", RECEIVED_AT)
    hit = _by_id(tps)["mautic:page_on_hit:55120"]
    assert hit.type == "page_view"
    assert hit.properties["url"].startswith("https://acme-analytics.io/pricing?")
    assert hit.properties["path"] == "/pricing"
    assert hit.properties["title"] == "Pricing | Acme Analytics"
    assert hit.campaign == "q4-webinar"
    assert (hit.email, hit.user_id) == ("jane.doe@acme.com", "mautic:1042")
    anonymous = next(tp for tp in tps if tp.event_id.startswith("mautic:page_on_hit:h"))
    assert anonymous.email is None and anonymous.user_id == "mautic:1099"
    assert anonymous.properties["path"] == "/webinar-q4"
    assert anonymous.traits == {}


def test_email_open_and_unsubscribe() -> None:
    tps = mautic.parse(load("mautic_queued.json"), "mautic", RECEIVED_AT)
    opened = next(tp for tp in tps if tp.type == "email_open")
    assert opened.properties == {"email_id": 12, "email_name": "Q4 webinar invite",
                                 "subject": "Lead scoring that sales trusts"}
    assert opened.email == "carl@initech.io"
    assert opened.occurred_at == datetime(2026, 11, 22, 9, 12, 33, tzinfo=UTC)
    [unsubscribed] = [tp for tp in tps if tp.type == "email_unsubscribe"]
    assert unsubscribed.email == "carl@initech.io"
    assert unsubscribed.properties == {"channel": "email", "old_status": "contactable", "new_status": "unsubscribed"}


def test_contact_saved_is_identify_with_traits() -> None:
    tps = _by_id(mautic.parse(load("mautic_queued.json"), "mautic", RECEIVED_AT))
    new = tps["mautic:lead_post_save_new:1043"]
    assert (new.type, new.email, new.user_id) == ("identify", "carl@initech.io", "mautic:1043")
    assert new.traits == {"first_name": "Carl", "last_name": "Smith", "company": "Initech",
                          "title": "Marketing Manager", "country": "United States"}


def test_redelivery_yields_the_same_event_ids() -> None:
    first = [tp.event_id for tp in mautic.parse(load("mautic_queued.json"), "mautic", RECEIVED_AT)]
    again = [tp.event_id for tp in mautic.parse(load("mautic_queued.json"), "mautic", datetime.now(UTC))]
    assert first == again


def test_another_open_of_the_same_email_is_a_new_event() -> None:
    body = load("mautic_queued.json")
    stat = body["mautic.email_on_open"][0]["stat"]
    stat["openCount"] = 3
    ids = {tp.event_id for tp in mautic.parse(body, "mautic", RECEIVED_AT)}
    assert "mautic:email_on_open:3307:3" in ids


def test_send_test_payload_style_object_per_type() -> None:
    [tp] = mautic.parse(load("mautic_test_payload.json"), "mautic", RECEIVED_AT)
    assert (tp.event_id, tp.type, tp.email) == ("mautic:form_on_submit:13", "form_submit", "email@formsubmit.com")
    assert tp.properties["form"] == "leadpoints"


def test_only_ignored_types_yield_nothing() -> None:
    body = {"mautic.email_on_send": [{"email": {}, "contact": {}}], "timestamp": "2026-11-22T10:00:00+00:00"}
    assert mautic.parse(body, "mautic", RECEIVED_AT) == []


def test_errors_name_the_native_field() -> None:
    body: dict[str, Any] = {
        "mautic.form_on_submit": [{"submission": {"form": {"alias": "demo"}, "lead": {"id": 1}}},  # no id
                                  {"timestamp": "x"}],                                            # no submission
        "mautic.page_on_hit": [{"hit": {"id": 9, "url": "https://a.co/x", "lead": None}}],          # no identity
        "mautic.email_on_open": "nope",
        "mautic.lead_post_save_new": [{"contact": {"fields": []}}, 7],
    }
    with pytest.raises(InvalidPayload) as exc:
        mautic.parse(body, "mautic", RECEIVED_AT)
    assert {d["field"] for d in exc.value.details} == {
        "mautic.form_on_submit.0.submission.id", "mautic.form_on_submit.1.submission",
        "mautic.page_on_hit.0.hit.lead.email", "mautic.email_on_open", "mautic.lead_post_save_new.0.contact.id",
        "mautic.lead_post_save_new.1"}


@pytest.mark.parametrize("body", [{}, {"timestamp": "2026-11-22T10:00:00+00:00"}, [], "x", {"form": 1}])
def test_bodies_without_mautic_events_are_invalid(body: Any) -> None:
    with pytest.raises(InvalidPayload):
        mautic.parse(body, "mautic", RECEIVED_AT)
