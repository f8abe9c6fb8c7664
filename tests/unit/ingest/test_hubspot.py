"""HubSpot webhooks: subscription events and the workflow contact webhook."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ingest.adapters import hubspot
from ingest.body import InvalidPayload
from tests.unit.ingest.payloads import RECEIVED_AT, load

RECEIVED = RECEIVED_AT  # 2026-11-22T10:10Z, just after the fixtures' occurredAt (1795341600000 = 10:00Z)


def test_subscription_events_map_contacts_and_skip_the_rest() -> None:
    tps = hubspot.parse(load("hubspot_subscription_events.json"), "hubspot", RECEIVED)
    by_id = {tp.event_id: tp for tp in tps}
    assert list(by_id) == ["hubspot:1921843201", "hubspot:1921843202", "hubspot:1921843203",
                           "hubspot:1921843204", "hubspot:1921843205", "hubspot:1921843208"]
    created = by_id["hubspot:1921843201"]
    assert (created.type, created.user_id, created.email, created.traits) == ("identify", "hubspot:90051", None, {})
    assert created.occurred_at == datetime.fromtimestamp(1795341600, tz=UTC)
    assert created.properties == {"subscription_type": "contact.creation", "change_source": "FORM",
                                  "portal_id": 48210567}
    email = by_id["hubspot:1921843202"]
    assert (email.user_id, email.email, email.traits) == ("hubspot:90051", "ana.lima@globex.com.br", {})
    assert by_id["hubspot:1921843203"].traits == {"title": "Head of Revenue Operations"}
    assert by_id["hubspot:1921843204"].traits == {"country": "BR"}
    merge = by_id["hubspot:1921843205"]
    assert (merge.type, merge.previous_id, merge.user_id) == ("alias", "hubspot:88012", "hubspot:90051")
    generic_object = by_id["hubspot:1921843208"]
    assert (generic_object.user_id, generic_object.traits) == ("hubspot:90052", {"first_name": "Bruno"})


def test_merge_of_several_contacts_gets_one_alias_each() -> None:
    event = {"eventId": 7, "subscriptionType": "contact.merge", "objectId": 1, "primaryObjectId": 1,
             "mergedObjectIds": [2, 3], "occurredAt": 1795341600000}
    tps = hubspot.parse([event], "hubspot", RECEIVED)
    assert [(tp.event_id, tp.previous_id, tp.user_id) for tp in tps] == [
        ("hubspot:7:2", "hubspot:2", "hubspot:1"), ("hubspot:7:3", "hubspot:3", "hubspot:1")]


def test_a_single_event_object_is_accepted() -> None:
    [tp] = hubspot.parse({"eventId": 9, "subscriptionType": "contact.creation", "objectId": 5}, "hubspot", RECEIVED)
    assert (tp.event_id, tp.user_id, tp.occurred_at) == ("hubspot:9", "hubspot:5", RECEIVED)


def test_cleared_email_still_links_the_contact() -> None:
    event = {"eventId": 10, "subscriptionType": "contact.propertyChange", "objectId": 5, "propertyName": "email",
             "propertyValue": ""}
    [tp] = hubspot.parse([event], "hubspot", RECEIVED)
    assert (tp.email, tp.user_id) == (None, "hubspot:5")


def test_subscription_errors_name_the_event_index() -> None:
    events: list[Any] = [
        {"eventId": 1, "subscriptionType": "contact.creation", "objectId": 1},
        {"subscriptionType": "contact.creation", "objectId": 2},                    # no eventId
        {"eventId": 3, "subscriptionType": "contact.creation"},                     # no objectId
        {"eventId": 4, "subscriptionType": "contact.propertyChange", "objectId": 4},  # no propertyName
        {"eventId": 5, "objectId": 5},                                              # no subscriptionType
        "x",
        {"eventId": 6, "subscriptionType": "contact.merge", "objectId": 6},          # no merged ids
    ]
    with pytest.raises(InvalidPayload) as exc:
        hubspot.parse(events, "hubspot", RECEIVED)
    assert {d["field"] for d in exc.value.details} == {"1.eventId", "2.objectId", "3.propertyName",
                                                       "4.subscriptionType", "5", "6.mergedObjectIds"}


def test_workflow_contact_yields_identify_forms_and_last_page() -> None:
    tps = hubspot.parse(load("hubspot_workflow_contact.json"), "hubspot", RECEIVED)
    assert [tp.type for tp in tps] == ["identify", "form_submit", "form_submit", "page_view"]
    assert all(tp.user_id == "hubspot:90051" and tp.email == "ana.lima@globex.com.br" for tp in tps)
    identify, guide, demo, page = tps
    assert identify.event_id == "hubspot:90051:identify:1795341700123"
    assert identify.occurred_at == datetime.fromtimestamp(1795341700.123, tz=UTC)
    assert identify.traits["first_name"] == "Ana"
    assert identify.traits["title"] == "Head of Revenue Operations"
    assert identify.traits["employees"] == "201-500"
    assert identify.traits["country"] == "BR"
    assert "email" not in identify.traits and "phone" not in identify.traits  # empty values are skipped
    assert demo.event_id == "hubspot:form:7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
    assert demo.properties == {"form": "Demo request", "form_id": "9f8e7d6c-5b4a-4321-8fed-cba987654321",
                               "url": "https://www.globex-demo.com/demo", "path": "/demo",
                               "page_title": "Book a demo"}
    assert guide.properties["form"] == "Guide download"
    assert page.event_id == "hubspot:90051:page_view:1795341590000"
    assert page.properties == {"url": "https://www.globex-demo.com/pricing?ref=nav", "path": "/pricing"}


def test_workflow_recent_conversion_is_used_without_form_submissions() -> None:
    contact = load("hubspot_workflow_contact.json")
    del contact["form-submissions"]
    tps = hubspot.parse(contact, "hubspot", RECEIVED)
    [form] = [tp for tp in tps if tp.type == "form_submit"]
    assert form.event_id == "hubspot:90051:form_submit:1795341600000"
    assert form.properties == {"form": "Demo request"}


def test_workflow_contact_with_plain_property_values() -> None:
    contact = {"vid": 12, "properties": {"email": "Bo@Example.org", "jobtitle": "CTO", "lastmodifieddate": 17}}
    [tp] = hubspot.parse(contact, "hubspot", RECEIVED)
    assert (tp.user_id, tp.email, tp.traits, tp.event_id) == (
        "hubspot:12", "bo@example.org", {"title": "CTO", "lastmodifieddate": 17}, "hubspot:12:identify:17")


def test_workflow_redelivery_is_stable() -> None:
    first = [tp.event_id for tp in hubspot.parse(load("hubspot_workflow_contact.json"), "hubspot", RECEIVED)]
    again = [tp.event_id for tp in hubspot.parse(load("hubspot_workflow_contact.json"), "hubspot", RECEIVED)]
    assert first == again
    contact = load("hubspot_workflow_contact.json")
    del contact["properties"]["lastmodifieddate"]
    digest_ids = [hubspot.parse(contact, "hubspot", RECEIVED)[0].event_id for _ in range(2)]
    assert digest_ids[0] == digest_ids[1] and digest_ids[0].startswith("hubspot:90051:identify:")


@pytest.mark.parametrize("body", [{}, "x", None, {"properties": {"email": {"value": "a@b.co"}}},
                                  {"vid": 1, "properties": []}])
def test_unrecognised_bodies_are_invalid(body: Any) -> None:
    with pytest.raises(InvalidPayload):
        hubspot.parse(body, "hubspot", RECEIVED)
