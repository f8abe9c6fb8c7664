"""``crm.kind: hubspot``: the CRM v3 objects API. Two steps, the second using the first's answer.

1. ``POST {url}/crm/v3/objects/contacts/batch/upsert`` with ``idProperty: email``: creates or updates
   the contact, sets its owner (``hubspot_owner_id``) and the score properties;
2. ``POST {url}/crm/v3/objects/notes`` with ``hs_note_body`` (the timeline and score breakdown as
   text), ``hs_timestamp`` (the assignment time) and an association to the contact whose id step 1
   returned (``results[0].id``; association type 202 is HubSpot's note-to-contact).

``crm.url`` is the API base (``https://api.hubapi.com``). Bearer token from ``crm.token_env``. Owner
ids: ``owner_ids`` maps our rep ids to HubSpot owner ids; a rep without an entry passes through as is.
The score goes to custom contact properties ``handoff_lead_id``, ``handoff_score``,
``handoff_fit_score`` and ``handoff_engagement_score`` (create them once in HubSpot, type text or
number); HubSpot answers 400 for unknown properties, which dead-letters the push with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from notifier.crm import lead as doc
from notifier.crm.outbound import IDEMPOTENCY_HEADER, Bind, OutboundRequest, json_bytes
from services.config import Crm

CONTACT_ID = "@@handoff:contact_id@@"
NOTE_TO_CONTACT = 202  # HUBSPOT_DEFINED association type id
NOTE_BODY_LIMIT = 65536


def _str(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def hubspot_requests(
    crm: Crm,
    lead: Mapping[str, Any],
    assignment_id: str,
    *,
    token: str,
    owner_ids: Mapping[str, str] | None = None,
) -> list[OutboundRequest]:
    the_id = doc.lead_id(lead)
    email = doc.primary_email(lead)
    if email is None:
        raise doc.LeadDocumentError(
            f"lead {the_id} has no email address; HubSpot contacts are upserted by email, "
            "so this lead cannot be pushed to HubSpot until one is known"
        )
    base = crm.url.rstrip("/")
    info = doc.person(lead)
    rep_id = doc.text_of(doc.assignment(lead).get("rep_id"))
    owner = (owner_ids or {}).get(rep_id, rep_id)
    points = doc.score(lead)
    properties = {
        "email": email,
        "firstname": info.first_name,
        "lastname": info.last_name,
        "company": info.company,
        "jobtitle": info.title,
        "country": info.country,
        "hubspot_owner_id": owner,
        "handoff_lead_id": the_id,
        "handoff_score": _str(points.get("total")),
        "handoff_fit_score": _str(points.get("fit")),
        "handoff_engagement_score": _str(points.get("engagement")),
    }
    present = {name: value for name, value in properties.items() if value}
    contact = {"inputs": [{"id": email, "idProperty": "email", "properties": present}]}
    note_properties = {
        "hs_timestamp": doc.text_of(doc.assignment(lead).get("assigned_at")) or None,
        "hs_note_body": doc.render_timeline(lead, limit=NOTE_BODY_LIMIT),
        "hubspot_owner_id": owner or None,
    }
    note = {
        "properties": {k: v for k, v in note_properties.items() if v},
        "associations": [
            {
                "to": {"id": CONTACT_ID},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": NOTE_TO_CONTACT}],
            }
        ],
    }
    common = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    key = f"{the_id}:{assignment_id}"
    return [
        OutboundRequest(
            "POST",
            f"{base}/crm/v3/objects/contacts/batch/upsert",
            {**common, IDEMPOTENCY_HEADER: f"{key}:contact"},
            json_bytes(contact),
            step="contact",
        ),
        OutboundRequest(
            "POST",
            f"{base}/crm/v3/objects/notes",
            {**common, IDEMPOTENCY_HEADER: f"{key}:note"},
            json_bytes(note),
            step="note",
            binds=(Bind(CONTACT_ID, 0, ("results", 0, "id")),),
        ),
    ]
