"""``crm.kind: webhook``: one signed POST of the whole lead to ``crm.url`` (contract section 5).

Body ``{"lead", "score", "stage_history", "touchpoints", "assignment", "sla"}``: ``lead`` is the
document of ``GET /v1/leads/{id}`` as it stands, the other keys lift its parts to the top for
receivers that only want those; ``assignment`` also carries the ``assignment_id``. Headers:
``Idempotency-Key: <lead_id>:<assignment_id>`` and ``X-Handoff-Signature`` (the ``generic`` scheme,
:func:`services.signing.sign`), so the receiver can check it with :func:`services.signing.verify`::

    [request] = webhook_requests(crm, lead, "asg-1", secret="s3cret", timestamp=1767225600)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from notifier.crm import lead as doc
from notifier.crm.outbound import IDEMPOTENCY_HEADER, OutboundRequest, json_bytes
from services.config import Crm
from services.signing import SIGNATURE_HEADER, sign


def webhook_body(lead: Mapping[str, Any], assignment_id: str) -> dict[str, Any]:
    return {
        "lead": dict(lead),
        "score": dict(doc.score(lead)),
        "stage_history": list(lead.get("stage_history") or []),
        "touchpoints": list(lead.get("touchpoints") or []),
        "assignment": {**doc.assignment(lead), "assignment_id": assignment_id},
        "sla": dict(doc.sla(lead)),
    }


def webhook_requests(
    crm: Crm, lead: Mapping[str, Any], assignment_id: str, *, secret: str, timestamp: int
) -> list[OutboundRequest]:
    body = json_bytes(webhook_body(lead, assignment_id))
    headers = {
        "Content-Type": "application/json",
        IDEMPOTENCY_HEADER: f"{doc.lead_id(lead)}:{assignment_id}",
        SIGNATURE_HEADER: sign(body, secret, timestamp),
    }
    return [OutboundRequest("POST", crm.url, headers, body, step="webhook")]
