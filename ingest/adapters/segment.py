"""Segment HTTP Tracking API payloads (``/v1/track``, ``/identify``, ``/page``, ``/alias``, ``/batch``).

Mapping (contract section 3; Segment's own field names appear in error paths, e.g. ``batch.3.userId``):

===========  ==========================================================================================
Segment      touchpoint
===========  ==========================================================================================
track        ``type`` = event name lower-cased, spaces/dashes -> ``_`` ("Demo Requested" ->
             ``demo_requested``); ``properties`` as sent
page         ``page_view``; ``properties`` as sent plus ``url``/``path``/``title``/``referrer`` filled
             from ``context.page`` when absent, ``path`` derived from ``url`` when still absent, and
             the page ``name``/``category``
screen       ``screen_view``; ``properties`` plus the screen ``name``
identify     ``identify``; ``traits`` as sent, ``traits.email`` becomes the touchpoint's ``email``
alias        ``alias``; ``previous_id`` = ``previousId``, ``user_id`` = ``userId``
group        ``identify`` recording the account: ``traits.group_id`` = ``groupId``, ``company`` =
             group ``name``, and ``website``/``industry``/``employees``/``plan`` when given
===========  ==========================================================================================

Every message: ``userId`` -> ``user_id``, ``anonymousId`` -> ``anonymous_id``, ``messageId`` ->
``event_id`` (a uuid4 when absent: then no dedupe), ``context.campaign.name`` -> ``campaign``,
``context.traits`` -> ``traits`` (and email) on track/page/screen. ``occurred_at`` is ``timestamp``;
without it Segment's own rule ``receivedAt - (sentAt - originalTimestamp)`` corrects the device
clock; without those it is the receipt time. Unparsable times fall back the same way (Segment does
not refuse a message for its clock). A batch's top-level ``context`` is merged under each message's.

    parse({"type": "track", "event": "Demo Requested", "userId": "u1", "messageId": "m1"}, "segment", now)
    parse(body, "segment", now, kind="track")   # /v1/track: the endpoint gives the type
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ingest.body import InvalidPayload
from ingest.schemas import (
    as_id,
    clamp_future,
    fail_many,
    make_touchpoint,
    normalize_email,
    normalize_type,
    parse_iso,
    path_from_url,
)
from services.events import Touchpoint, new_id

MESSAGE_TYPES = ("track", "identify", "page", "screen", "alias", "group")
_GROUP_TRAITS = {"name": "company", "website": "website", "industry": "industry",
                 "employees": "employees", "plan": "plan"}
_PAGE_CONTEXT_KEYS = ("url", "path", "title", "referrer", "search")


def parse(
    payload: Any, source_id: str, received_at: datetime, *, kind: str | None = None
) -> list[Touchpoint]:
    """Touchpoints of a Segment body. ``kind`` is the endpoint (``track``, ..., ``batch``) when the
    request came to ``/v1/<kind>``; ``None`` means: read it from the body (``/webhooks/{id}``)."""
    if not isinstance(payload, dict):
        raise InvalidPayload.single("", "body must be a JSON object (a Segment message or a batch)")
    errors: list[dict[str, str]] = []
    out: list[Touchpoint] = []
    if kind == "batch" or (kind is None and "batch" in payload and "type" not in payload):
        batch = payload.get("batch")
        if not isinstance(batch, list):
            raise InvalidPayload.single("batch", "must be an array of Segment messages")
        shared_context = _obj(payload.get("context"))
        for i, message in enumerate(batch):
            tp = _message(message, f"batch.{i}", None, payload.get("sentAt"), shared_context,
                          source_id, received_at, errors)
            if tp is not None:
                out.append(tp)
    else:
        tp = _message(payload, "", kind, None, {}, source_id, received_at, errors)
        if tp is not None:
            out.append(tp)
    if errors:
        raise fail_many(errors)
    return out


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _occurred_at(message: dict[str, Any], batch_sent_at: Any, received_at: datetime) -> datetime:
    stamp = parse_iso(message.get("timestamp"))
    if stamp is not None:
        return clamp_future(stamp, received_at)
    original = parse_iso(message.get("originalTimestamp"))
    sent = parse_iso(message.get("sentAt")) or parse_iso(batch_sent_at)
    if original is not None and sent is not None:
        try:
            return clamp_future(received_at - (sent - original), received_at)
        except OverflowError:
            pass
    if original is not None:
        return clamp_future(original, received_at)
    return received_at


def _message(message: Any, field: str, kind: str | None, batch_sent_at: Any, shared_context: dict[str, Any],
             source_id: str, received_at: datetime, errors: list[dict[str, str]]) -> Touchpoint | None:
    prefix = f"{field}." if field else ""
    if not isinstance(message, dict):
        errors.append({"field": field, "message": "must be a JSON object (a Segment message)"})
        return None
    raw_type = kind if kind in MESSAGE_TYPES else message.get("type")
    msg_type = raw_type.strip().lower() if isinstance(raw_type, str) else None
    if msg_type not in MESSAGE_TYPES:
        errors.append({"field": f"{prefix}type", "message": f"must be one of {', '.join(MESSAGE_TYPES)}"})
        return None

    context = {**shared_context, **_obj(message.get("context"))}
    user_id = as_id(message.get("userId"))
    anonymous_id = as_id(message.get("anonymousId"))
    local: list[dict[str, str]] = []
    for name in ("properties", "traits"):
        if message.get(name) is not None and not isinstance(message.get(name), dict):
            local.append({"field": f"{prefix}{name}", "message": "must be a JSON object"})
    properties = dict(_obj(message.get("properties")))
    traits = dict(_obj(message.get("traits")) if msg_type in ("identify", "group")
                  else _obj(context.get("traits")))
    email = normalize_email(traits.get("email")) if msg_type != "group" else None
    if email is None and msg_type != "identify":
        email = normalize_email(_obj(context.get("traits")).get("email"))
    previous_id: str | None = None

    if msg_type == "track":
        event = message.get("event")
        tp_type = normalize_type(event) if isinstance(event, str) else ""
        if not tp_type.strip("_"):
            local.append({"field": f"{prefix}event", "message": "track needs a non-empty event name"})
    elif msg_type == "page":
        tp_type = "page_view"
        page = _obj(context.get("page"))
        for key in _PAGE_CONTEXT_KEYS:
            if properties.get(key) in (None, "") and isinstance(page.get(key), str) and page[key]:
                properties[key] = page[key]
        if properties.get("path") in (None, ""):
            path = path_from_url(properties.get("url"))
            if path is not None:
                properties["path"] = path
        for key in ("name", "category"):
            if isinstance(message.get(key), str) and message[key] and key not in properties:
                properties[key] = message[key]
    elif msg_type == "screen":
        tp_type = "screen_view"
        if isinstance(message.get("name"), str) and message["name"] and "name" not in properties:
            properties["name"] = message["name"]
    elif msg_type == "identify":
        tp_type = "identify"
    elif msg_type == "alias":
        tp_type = "alias"
        previous_id = as_id(message.get("previousId"))
        if previous_id is None:
            local.append({"field": f"{prefix}previousId", "message": "alias needs the previousId to link"})
        if user_id is None:
            local.append({"field": f"{prefix}userId", "message": "alias needs the userId to link to"})
    else:  # group: the account a person belongs to, recorded as traits of that person
        tp_type = "identify"
        group_id = as_id(message.get("groupId"))
        if group_id is None:
            local.append({"field": f"{prefix}groupId", "message": "group needs a groupId"})
        group_traits = traits
        traits = {"group_id": group_id}
        for key, trait in _GROUP_TRAITS.items():
            if group_traits.get(key) not in (None, ""):
                traits[trait] = group_traits[key]

    if msg_type != "alias" and not (user_id or anonymous_id or email):
        local.append({"field": f"{prefix}userId", "message": "userId or anonymousId is required"})
    if local:
        errors.extend(local)
        return None
    campaign = _obj(context.get("campaign")).get("name")
    try:
        return make_touchpoint(
            field, event_id=as_id(message.get("messageId")) or new_id(), type=tp_type,
            occurred_at=_occurred_at(message, batch_sent_at, received_at), received_at=received_at,
            source=source_id, email=email, user_id=user_id, anonymous_id=anonymous_id,
            previous_id=previous_id, campaign=campaign if isinstance(campaign, str) and campaign else None,
            properties=properties, traits=traits,
        )
    except InvalidPayload as exc:
        errors.extend(exc.details)
        return None
