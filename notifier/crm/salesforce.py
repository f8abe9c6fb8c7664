"""``crm.kind: salesforce``: REST sObjects. Upsert the Lead by external id, then a Task with the timeline.

1. ``PATCH {url}/services/data/v60.0/sobjects/Lead/{crm.external_id_field}/{lead_id}``: creates (201)
   or updates (200) the Lead, both answering ``{"id": ..., "success": true, ...}``;
2. ``POST {url}/services/data/v60.0/sobjects/Task`` with ``WhoId`` = that id, the timeline and score
   breakdown in ``Description``, due on the SLA due date.

``crm.url`` is the instance URL (``https://MyDomain.my.salesforce.com``). Bearer token from
``crm.token_env``. ``OwnerId``: ``owner_ids`` maps rep ids to Salesforce user ids, else the rep id is
passed through. Salesforce requires ``LastName`` and ``Company``: the email's local part and
``[not provided]`` stand in when the lead has none. The score goes to ``Rating`` (Hot/Warm/Cold) and
the custom field ``Handoff_Score__c`` (create it once, type Number).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from notifier.crm import lead as doc
from notifier.crm.outbound import IDEMPOTENCY_HEADER, Bind, OutboundRequest, json_bytes
from services.config import Crm

API_VERSION = "v60.0"
LEAD_ID = "@@handoff:sf_lead_id@@"
DESCRIPTION_LIMIT = 32000
SCORE_FIELD = "Handoff_Score__c"


def rating(total: Any, hot: float = 80, warm: float = 40) -> str:
    try:
        value = float(total)
    except (TypeError, ValueError):
        return "Cold"
    return "Hot" if value >= hot else "Warm" if value >= warm else "Cold"


def salesforce_requests(
    crm: Crm,
    lead: Mapping[str, Any],
    assignment_id: str,
    *,
    token: str,
    owner_ids: Mapping[str, str] | None = None,
) -> list[OutboundRequest]:
    the_id = doc.lead_id(lead)
    base = f"{crm.url.rstrip('/')}/services/data/{API_VERSION}/sobjects"
    info = doc.person(lead)
    email = doc.primary_email(lead)
    given = doc.assignment(lead)
    rep_id = doc.text_of(given.get("rep_id"))
    owner = (owner_ids or {}).get(rep_id, rep_id)
    points = doc.score(lead)
    total = points.get("total")
    fields: dict[str, Any] = {
        "FirstName": info.first_name,
        "LastName": info.last_name or (email.split("@")[0] if email else "") or f"Lead {the_id}",
        "Company": info.company or "[not provided]",
        "Email": email,
        "Title": info.title,
        "Country": info.country,
        "LeadSource": "Web",
        "OwnerId": owner,
        "Rating": rating(total),
        SCORE_FIELD: total if isinstance(total, int | float) and not isinstance(total, bool) else None,
    }
    due = doc.text_of(doc.sla(lead).get("due_at"))
    task: dict[str, Any] = {
        "WhoId": LEAD_ID,
        "Subject": "Lead handoff: first touch" + (f" due {due}" if due else ""),
        "Description": doc.render_timeline(lead, limit=DESCRIPTION_LIMIT),
        "Status": "Not Started",
        "Priority": "High",
        "OwnerId": owner,
        "ActivityDate": due[:10] if len(due) >= 10 else None,
    }
    common = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    key = f"{the_id}:{assignment_id}"
    return [
        OutboundRequest(
            "PATCH",
            f"{base}/Lead/{quote(crm.external_id_field, safe='')}/{quote(the_id, safe='')}",
            {**common, IDEMPOTENCY_HEADER: f"{key}:lead"},
            json_bytes({k: v for k, v in fields.items() if v not in (None, "")}),
            step="lead",
        ),
        OutboundRequest(
            "POST",
            f"{base}/Task",
            {**common, IDEMPOTENCY_HEADER: f"{key}:task"},
            json_bytes({k: v for k, v in task.items() if v not in (None, "")}),
            step="task",
            binds=(Bind(LEAD_ID, 0, ("id",)),),
        ),
    ]
