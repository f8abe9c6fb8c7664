"""Mautic webhooks: ``{"mautic.<event>": [ {...}, ... ], ..., "timestamp": "..."}``.

In queued ("background") mode one body carries several event types and several events of each; in
immediate mode one. The "Send Test Payload" button sends one object per type instead of an array;
both are accepted. Mapping (contract section 3), each native event -> at most one touchpoint:

- ``mautic.form_on_submit`` -> ``form_submit``: ``properties.form`` = the form's alias, ``form_id``,
  ``form_name``, ``results``, ``url``/``path`` of the referer. Id ``mautic:form_on_submit:<submission id>``.
- ``mautic.page_on_hit`` -> ``page_view``: ``properties.url``, ``path``, ``title``, ``referrer``;
  ``campaign`` from the hit's ``utm_campaign``. Id ``mautic:page_on_hit:<hit id>`` (older Mautic sends
  no hit id: then ``mautic:page_on_hit:h<digest of contact, time, URL, tracking id>``).
- ``mautic.email_on_open`` -> ``email_open``: ``properties.email_id``, ``email_name``, ``subject``.
  Id ``mautic:email_on_open:<stat id>:<openCount>`` (one stat per send; each open is its own event).
- ``mautic.lead_channel_subscription_changed`` with ``new_status: unsubscribed`` -> ``email_unsubscribe``
  (``<channel>_unsubscribe`` for other channels). Id
  ``mautic:lead_channel_subscription_changed:<contact id>:<channel>:<timestamp>``. Other statuses
  (``contactable``, ``bounced``, ``manual``) make no touchpoint.
- ``mautic.lead_post_save_new`` / ``_update`` -> ``identify``. Ids ``mautic:lead_post_save_new:<contact id>``
  and ``mautic:lead_post_save_update:<contact id>:<dateModified>``.
- every other ``mautic.*`` type (``email_on_send``, points, deletions, companies, ...) -> nothing.

Identity of every event: the contact's ``fields.core.email.value`` (lower-cased) as ``email`` and
``mautic:<contact id>`` as ``user_id``. Traits: every non-empty contact field by its alias, except
``email`` and Mautic's own ``points``, with ``firstname``/``lastname`` -> ``first_name``/``last_name``,
``position`` (the job title) -> ``title`` and Mautic's ``title`` (Mr./Ms.) -> ``salutation``.
Country values stay as Mautic stores them (full names such as ``Germany``).
Event times: the event's own date (``dateSubmitted``, ``dateHit``, ``lastOpened``, ``dateModified``),
else its queue ``timestamp``, else the receipt time.
"""

from __future__ import annotations

from collections.abc import Callable
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
    short_hash,
)
from services.events import Touchpoint

PREFIX = "mautic."
_TRAIT_NAMES = {"firstname": "first_name", "lastname": "last_name", "position": "title",
                "title": "salutation"}
_SKIPPED_FIELDS = frozenset({"email", "points"})

Handler = Callable[[str, dict[str, Any], str, datetime], "Touchpoint | None"]


def parse(payload: Any, source_id: str, received_at: datetime) -> list[Touchpoint]:
    """Touchpoints of a Mautic webhook body (see the module docstring for the mapping)."""
    if not isinstance(payload, dict) or not any(isinstance(k, str) and k.startswith(PREFIX) for k in payload):
        raise InvalidPayload.single("", 'body must be a Mautic webhook object keyed by event type, '
                                        'e.g. {"mautic.form_on_submit": [ ... ]}')
    errors: list[dict[str, str]] = []
    out: list[Touchpoint] = []
    for key, value in payload.items():
        if not isinstance(key, str) or not key.startswith(PREFIX):
            continue  # the batch "timestamp" and anything else that is not an event list
        name = key[len(PREFIX):]
        handler = _handler(name)
        if handler is None:
            continue
        events = [value] if isinstance(value, dict) else value
        if not isinstance(events, list):
            errors.append({"field": key, "message": "must be an array of events"})
            continue
        for i, event in enumerate(events):
            field = f"{key}.{i}"
            if not isinstance(event, dict):
                errors.append({"field": field, "message": "must be a JSON object (a Mautic event)"})
                continue
            try:
                tp = handler(field, event, source_id, received_at)
            except InvalidPayload as exc:
                errors.extend(exc.details)
                continue
            if tp is not None:
                out.append(tp)
    if errors:
        raise fail_many(errors)
    return out


def _handler(name: str) -> Handler | None:
    match name:
        case "form_on_submit":
            return _form_on_submit
        case "page_on_hit":
            return _page_on_hit
        case "email_on_open":
            return _email_on_open
        case "lead_channel_subscription_changed":
            return _channel_subscription_changed
        case "lead_post_save_new" | "lead_post_save_update":
            return _lead_saved_new if name.endswith("new") else _lead_saved_update
        case _:
            return None


# ---------------------------------------------------------------------------------------------

def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and v != ""}


def _fields(contact: dict[str, Any]) -> dict[str, Any]:
    """Contact field values by alias from ``fields.<group>.<alias>.value`` (or a flat ``fields.all``)."""
    values: dict[str, Any] = {}
    for group, entries in _obj(contact.get("fields")).items():
        if not isinstance(entries, dict):
            continue  # Mautic sends [] for an empty group
        for alias, field in entries.items():
            if not isinstance(alias, str):
                continue
            if isinstance(field, dict):
                value = field.get("value")
            elif group == "all":
                value = field
            else:
                continue
            if value is not None and value != "" and alias not in values:
                values[alias] = value
    return values


def _contact(contact: Any) -> tuple[str | None, str | None, dict[str, Any]]:
    """(email, user_id, traits) of a Mautic contact object."""
    if not isinstance(contact, dict):
        return None, None, {}
    cid = as_id(contact.get("id"))
    values = _fields(contact)
    traits = {_TRAIT_NAMES.get(alias, alias): value for alias, value in values.items()
              if alias not in _SKIPPED_FIELDS}
    return normalize_email(values.get("email")), (f"mautic:{cid}" if cid else None), traits


def _when(received_at: datetime, *candidates: Any) -> datetime:
    for candidate in candidates:
        parsed = parse_iso(candidate)
        if parsed is not None:
            return clamp_future(parsed, received_at)
    return received_at


def _required(field: str, message: str) -> InvalidPayload:
    return InvalidPayload.single(field, message)


# ---------------------------------------------------------------------------------------------

def _form_on_submit(field: str, event: dict[str, Any], source_id: str,
                    received_at: datetime) -> Touchpoint:
    submission = event.get("submission")
    if not isinstance(submission, dict):
        raise _required(f"{field}.submission", "form submit event lacks its submission object")
    sid = as_id(submission.get("id"))
    if sid is None:
        raise _required(f"{field}.submission.id", "form submission lacks its id")
    form = _obj(submission.get("form"))
    results = _obj(submission.get("results"))
    email, user_id, traits = _contact(submission.get("lead"))
    referer = _text(submission.get("referer"))
    return make_touchpoint(
        f"{field}.submission.lead", event_id=f"mautic:form_on_submit:{sid}", type="form_submit",
        occurred_at=_when(received_at, submission.get("dateSubmitted"), event.get("timestamp")),
        received_at=received_at, source=source_id, email=email or normalize_email(results.get("email")),
        user_id=user_id, traits=traits,
        properties=_compact({"form": _text(form.get("alias")) or _text(form.get("name")),
                             "form_id": form.get("id"), "form_name": form.get("name"), "results": results,
                             "url": referer, "path": path_from_url(referer)}),
    )


def _page_on_hit(field: str, event: dict[str, Any], source_id: str,
                 received_at: datetime) -> Touchpoint:
    hit = event.get("hit")
    if not isinstance(hit, dict):
        raise _required(f"{field}.hit", "page hit event lacks its hit object")
    email, user_id, traits = _contact(hit.get("lead"))
    url = _text(hit.get("url"))
    page = _obj(hit.get("page"))
    query = _obj(hit.get("query"))
    hid = as_id(hit.get("id"))
    event_id = (f"mautic:page_on_hit:{hid}" if hid else
                f"mautic:page_on_hit:h{short_hash(user_id, hit.get('dateHit'), url, hit.get('trackingId'))}")
    campaign = _text(query.get("utm_campaign"))
    return make_touchpoint(
        f"{field}.hit.lead", event_id=event_id, type="page_view",
        occurred_at=_when(received_at, hit.get("dateHit"), event.get("timestamp")),
        received_at=received_at, source=source_id, email=email, user_id=user_id, traits=traits,
        campaign=campaign,
        properties=_compact({"url": url, "path": path_from_url(url),
                             "title": _text(hit.get("urlTitle")) or _text(page.get("title")),
                             "referrer": _text(hit.get("referer")), "landing_page": _text(page.get("alias")),
                             "hit_source": _text(hit.get("source")), "hit_source_id": hit.get("sourceId")}),
    )


def _email_on_open(field: str, event: dict[str, Any], source_id: str,
                   received_at: datetime) -> Touchpoint:
    stat = event.get("stat")
    if not isinstance(stat, dict):
        raise _required(f"{field}.stat", "email open event lacks its stat object")
    stat_id = as_id(stat.get("id"))
    if stat_id is None:
        raise _required(f"{field}.stat.id", "email open stat lacks its id")
    email, user_id, traits = _contact(stat.get("lead"))
    # One stat row per send; its open count tells the opens apart, so each open is its own event.
    nth = (as_id(stat.get("openCount")) or _text(stat.get("lastOpened"))
           or _text(event.get("timestamp")) or "1")
    sent = _obj(stat.get("email"))
    return make_touchpoint(
        f"{field}.stat.lead", event_id=f"mautic:email_on_open:{stat_id}:{nth}", type="email_open",
        occurred_at=_when(received_at, stat.get("lastOpened"), stat.get("dateRead"), event.get("timestamp")),
        received_at=received_at, source=source_id,
        email=email or normalize_email(stat.get("emailAddress")), user_id=user_id, traits=traits,
        properties=_compact({"email_id": sent.get("id"), "email_name": _text(sent.get("name")),
                             "subject": _text(sent.get("subject"))}),
    )


def _channel_subscription_changed(field: str, event: dict[str, Any], source_id: str,
                                  received_at: datetime) -> Touchpoint | None:
    if event.get("new_status") != "unsubscribed":
        return None  # contactable/bounced/manual are not a buyer's unsubscribe
    channel = _text(event.get("channel")) or "email"
    contact = _obj(event.get("contact"))
    email, user_id, traits = _contact(contact)
    who = as_id(contact.get("id")) or email or short_hash(contact)
    stamp = _text(event.get("timestamp")) or short_hash(event)
    tp_type = "email_unsubscribe" if channel == "email" else f"{normalize_type(channel)}_unsubscribe"
    return make_touchpoint(
        f"{field}.contact", event_id=f"mautic:lead_channel_subscription_changed:{who}:{channel}:{stamp}",
        type=tp_type, occurred_at=_when(received_at, event.get("timestamp")), received_at=received_at,
        source=source_id, email=email, user_id=user_id, traits=traits,
        properties=_compact({"channel": channel, "old_status": _text(event.get("old_status")),
                             "new_status": "unsubscribed"}),
    )


def _lead_saved(field: str, event: dict[str, Any], source_id: str, received_at: datetime,
                new: bool) -> Touchpoint:
    contact = event.get("contact")
    if not isinstance(contact, dict):
        raise _required(f"{field}.contact", "contact event lacks its contact object")
    cid = as_id(contact.get("id"))
    if cid is None:
        raise _required(f"{field}.contact.id", "contact lacks its id")
    email, user_id, traits = _contact(contact)
    if new:
        event_id = f"mautic:lead_post_save_new:{cid}"
    else:
        version = (_text(contact.get("dateModified")) or _text(event.get("timestamp"))
                   or short_hash(_fields(contact)))
        event_id = f"mautic:lead_post_save_update:{cid}:{version}"
    return make_touchpoint(
        f"{field}.contact", event_id=event_id, type="identify",
        occurred_at=_when(received_at, contact.get("dateModified"), contact.get("dateIdentified"),
                          contact.get("dateAdded"), event.get("timestamp")),
        received_at=received_at, source=source_id, email=email, user_id=user_id, traits=traits,
    )


def _lead_saved_new(field: str, event: dict[str, Any], source_id: str,
                    received_at: datetime) -> Touchpoint:
    return _lead_saved(field, event, source_id, received_at, new=True)


def _lead_saved_update(field: str, event: dict[str, Any], source_id: str,
                       received_at: datetime) -> Touchpoint:
    return _lead_saved(field, event, source_id, received_at, new=False)
