"""HubSpot webhooks, in the two shapes HubSpot sends them.

1. **Subscription events** (Webhooks API of a HubSpot app): a JSON array of up to 100 events such as
   ``{"eventId": 1, "subscriptionType": "contact.propertyChange", "objectId": 123, "propertyName":
   "email", "propertyValue": "jane@acme.com", "occurredAt": 1732269600000, ...}``.

   - ``contact.creation`` / ``contact.restore`` -> ``identify`` with ``user_id`` ``hubspot:<objectId>``;
   - ``contact.propertyChange`` of ``email`` -> ``identify`` with that ``email`` (lower-cased);
   - ``contact.propertyChange`` of another property -> ``identify`` with ``traits.<name>`` = the value;
   - ``contact.merge`` -> ``alias`` of ``previous_id`` ``hubspot:<merged id>`` to ``user_id``
     ``hubspot:<primaryObjectId>`` (ids ``hubspot:<eventId>:<merged id>`` when several were merged);
   - ``object.*`` events with ``objectTypeId`` ``0-1`` (contacts) -> as the ``contact.*`` event;
   - anything else (deletions, privacy deletions, companies, deals, ...) -> nothing.

   The event id is ``hubspot:<eventId>``, ``occurredAt`` (Unix ms) is ``occurred_at``, and
   ``properties`` keep ``subscription_type``, ``change_source`` and ``portal_id``.

2. **Workflow webhook** ("Send a webhook" action with the contact): one contact object with ``vid``
   (or ``canonical-vid``/``objectId``) and ``properties`` as ``{"name": {"value": ...}}`` (plain
   values are accepted too). ``user_id`` is ``hubspot:<vid>``; it yields

   - ``identify`` with ``email`` and every other non-empty property as a trait
     (``hubspot:<vid>:identify:<lastmodifieddate>``, a digest of the properties without one);
   - ``form_submit`` per entry of ``form-submissions`` (``hubspot:form:<conversion-id>``) with
     ``properties.form`` = the form's title, ``form_id``, ``url``/``path`` of the page; or, without that
     list, one for ``recent_conversion_event_name`` (``properties.form`` = that name,
     ``hubspot:<vid>:form_submit:<recent_conversion_date>``);
   - ``page_view`` for ``hs_analytics_last_url`` (``properties.url``/``path``,
     ``hubspot:<vid>:page_view:<hs_analytics_last_timestamp>``).

Trait names: ``firstname``/``lastname`` -> ``first_name``/``last_name``, ``jobtitle`` -> ``title``,
``numemployees`` -> ``employees``, ``zip`` -> ``postal_code``; other properties keep HubSpot's name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ingest.body import InvalidPayload
from ingest.schemas import (
    as_id,
    clamp_future,
    fail_many,
    from_epoch_ms,
    make_touchpoint,
    normalize_email,
    parse_iso,
    path_from_url,
    short_hash,
)
from services.events import Touchpoint

CONTACT_OBJECT_TYPE_ID = "0-1"
_TRAIT_NAMES = {"firstname": "first_name", "lastname": "last_name", "jobtitle": "title",
                "numemployees": "employees", "zip": "postal_code"}
_IDENTIFY_ACTIONS = frozenset({"creation", "restore", "propertyChange"})


def parse(payload: Any, source_id: str, received_at: datetime) -> list[Touchpoint]:
    """Touchpoints of a HubSpot webhook body, either shape (see the module docstring)."""
    if isinstance(payload, list):
        return _subscription_events(payload, source_id, received_at)
    if isinstance(payload, dict) and "subscriptionType" in payload:
        return _subscription_events([payload], source_id, received_at)
    if isinstance(payload, dict) and any(k in payload for k in ("vid", "canonical-vid", "properties")):
        return _workflow_contact(payload, source_id, received_at)
    raise InvalidPayload.single("", "body must be a JSON array of HubSpot webhook events or the contact "
                                    "object of a HubSpot workflow webhook")


def trait_name(prop: str) -> str:
    return _TRAIT_NAMES.get(prop, prop)


def _when(value: Any, received_at: datetime) -> datetime:
    moment = from_epoch_ms(value) or parse_iso(value)
    return clamp_future(moment, received_at) if moment is not None else received_at


# --- 1. subscription events --------------------------------------------------------------------

def _contact_action(event: dict[str, Any]) -> str | None:
    """``creation``/``propertyChange``/... for contact events, ``None`` for every other object."""
    kind = event.get("subscriptionType")
    if not isinstance(kind, str) or "." not in kind:
        return None
    obj, _, action = kind.partition(".")
    if obj == "contact":
        return action
    if obj == "object" and (event.get("objectTypeId") == CONTACT_OBJECT_TYPE_ID
                            or event.get("objectType") in ("contact", "CONTACT")):
        return action
    return None


def _subscription_events(events: list[Any], source_id: str, received_at: datetime) -> list[Touchpoint]:
    errors: list[dict[str, str]] = []
    out: list[Touchpoint] = []
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            errors.append({"field": str(i), "message": "must be a JSON object (a HubSpot event)"})
            continue
        try:
            out.extend(_subscription_event(str(i), event, source_id, received_at))
        except InvalidPayload as exc:
            errors.extend(exc.details)
    if errors:
        raise fail_many(errors)
    return out


def _subscription_event(field: str, event: dict[str, Any], source_id: str,
                        received_at: datetime) -> list[Touchpoint]:
    if not isinstance(event.get("subscriptionType"), str):
        raise InvalidPayload.single(f"{field}.subscriptionType", "HubSpot event lacks its subscriptionType")
    action = _contact_action(event)
    if action not in _IDENTIFY_ACTIONS and action != "merge":
        return []
    event_id = as_id(event.get("eventId"))
    if event_id is None:
        raise InvalidPayload.single(f"{field}.eventId", "HubSpot event lacks its eventId")
    occurred_at = _when(event.get("occurredAt"), received_at)
    properties = {k: v for k, v in (("subscription_type", event.get("subscriptionType")),
                                    ("change_source", event.get("changeSource")),
                                    ("portal_id", event.get("portalId"))) if v is not None}
    common: dict[str, Any] = {"occurred_at": occurred_at, "received_at": received_at, "source": source_id,
                              "properties": properties}
    if action == "merge":
        primary = as_id(event.get("primaryObjectId")) or as_id(event.get("objectId"))
        merged = [m for m in (as_id(x) for x in _list(event.get("mergedObjectIds"))) if m and m != primary]
        if primary is None or not merged:
            raise InvalidPayload.single(f"{field}.mergedObjectIds",
                                        "merge event needs primaryObjectId and mergedObjectIds")
        return [make_touchpoint(field, event_id=f"hubspot:{event_id}" if len(merged) == 1
                                else f"hubspot:{event_id}:{m}", type="alias", previous_id=f"hubspot:{m}",
                                user_id=f"hubspot:{primary}", **common) for m in merged]
    object_id = as_id(event.get("objectId"))
    if object_id is None:
        raise InvalidPayload.single(f"{field}.objectId", "HubSpot contact event lacks its objectId")
    email: str | None = None
    traits: dict[str, Any] = {}
    if action == "propertyChange":
        name = event.get("propertyName")
        if not isinstance(name, str) or not name:
            raise InvalidPayload.single(f"{field}.propertyName",
                                        "propertyChange event lacks its propertyName")
        if name == "email":
            email = normalize_email(event.get("propertyValue"))  # cleared or invalid: just the link
        else:
            traits = {trait_name(name): event.get("propertyValue")}
    return [make_touchpoint(field, event_id=f"hubspot:{event_id}", type="identify", email=email,
                            user_id=f"hubspot:{object_id}", traits=traits, **common)]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# --- 2. workflow webhook (a contact record) -----------------------------------------------------

def _property_values(raw: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, prop in raw.items():
        value = prop.get("value") if isinstance(prop, dict) else prop
        if isinstance(name, str) and value is not None and value != "":
            values[name] = value
    return values


def _workflow_contact(contact: dict[str, Any], source_id: str, received_at: datetime) -> list[Touchpoint]:
    raw_properties = contact.get("properties", {})
    if not isinstance(raw_properties, dict):
        raise InvalidPayload.single("properties", "must be an object of contact properties")
    values = _property_values(raw_properties)
    vid = (as_id(contact.get("vid")) or as_id(contact.get("canonical-vid")) or as_id(contact.get("objectId"))
           or as_id(values.get("hs_object_id")))
    if vid is None:
        raise InvalidPayload.single("vid", "HubSpot contact lacks its vid")
    user_id = f"hubspot:{vid}"
    email = normalize_email(values.get("email"))
    common: dict[str, Any] = {"received_at": received_at, "source": source_id, "email": email,
                              "user_id": user_id}
    modified = values.get("lastmodifieddate")
    out = [make_touchpoint(
        "", event_id=f"hubspot:{vid}:identify:{as_id(modified) or short_hash(values)}", type="identify",
        occurred_at=_when(modified, received_at),
        traits={trait_name(k): v for k, v in values.items() if k != "email"}, **common,
    )]

    submissions = [s for s in _list(contact.get("form-submissions")) if isinstance(s, dict)]
    for submission in submissions:
        conversion = as_id(submission.get("conversion-id")) or short_hash(submission)
        url = submission.get("page-url") if isinstance(submission.get("page-url"), str) else None
        out.append(make_touchpoint(
            "form-submissions", event_id=f"hubspot:form:{conversion}", type="form_submit",
            occurred_at=_when(submission.get("timestamp"), received_at),
            properties={k: v for k, v in (("form", submission.get("title")),
                                          ("form_id", submission.get("form-id")), ("url", url),
                                          ("path", path_from_url(url)),
                                          ("page_title", submission.get("page-title"))) if v is not None},
            **common,
        ))
    conversion_name = values.get("recent_conversion_event_name")
    if not submissions and isinstance(conversion_name, str):
        date = values.get("recent_conversion_date")
        out.append(make_touchpoint(
            "properties.recent_conversion_event_name",
            event_id=f"hubspot:{vid}:form_submit:{as_id(date) or short_hash(conversion_name)}",
            type="form_submit", occurred_at=_when(date, received_at),
            properties={"form": conversion_name}, **common,
        ))
    last_url = values.get("hs_analytics_last_url")
    if isinstance(last_url, str):
        seen = values.get("hs_analytics_last_timestamp")
        out.append(make_touchpoint(
            "properties.hs_analytics_last_url",
            event_id=f"hubspot:{vid}:page_view:{as_id(seen) or short_hash(last_url)}", type="page_view",
            occurred_at=_when(seen, received_at),
            properties={k: v for k, v in (("url", last_url), ("path", path_from_url(last_url))) if v},
            **common,
        ))
    return out
