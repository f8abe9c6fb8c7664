"""CRM adapters: turn a lead document into HTTP requests (pure), and send them (thin, async).

::

    requests = build_crm_requests(config.crm, lead, assignment_id, environ=os.environ,
                                  timestamp=int(now.timestamp()))
    result = await send_sequence(client, requests, timeout=config.crm.timeout_seconds)
    outcome = retry.decide(policy, attempt, result.status, result.error, result.retry_after, now, jitter)

Build the requests again for every attempt (never store the built ones): the webhook signature
carries its timestamp and receivers refuse one older than 300 s. The ``Idempotency-Key`` stays the
same across attempts (``<lead_id>:<assignment_id>``, with ``:<step>`` for the two-step CRMs), so a
receiver that saw an attempt whose answer got lost can recognise the retry.

Raises :class:`MissingSecret` when the secret/token variable is unset and :class:`LeadDocumentError`
when the lead cannot be expressed in that CRM (HubSpot without an email): both are permanent, so the
caller dead-letters the push with the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from notifier.crm.hubspot import hubspot_requests
from notifier.crm.lead import LeadDocumentError, render_timeline
from notifier.crm.outbound import (
    IDEMPOTENCY_HEADER,
    Bind,
    MissingSecret,
    OutboundRequest,
    SendResult,
    StepAnswer,
    secret_from,
    send_sequence,
)
from notifier.crm.salesforce import salesforce_requests
from notifier.crm.webhook import webhook_body, webhook_requests
from services.config import Crm

__all__ = [
    "IDEMPOTENCY_HEADER",
    "Bind",
    "LeadDocumentError",
    "MissingSecret",
    "OutboundRequest",
    "SendResult",
    "StepAnswer",
    "build_crm_requests",
    "hubspot_requests",
    "render_timeline",
    "salesforce_requests",
    "send_sequence",
    "webhook_body",
    "webhook_requests",
]


def build_crm_requests(
    crm: Crm,
    lead: Mapping[str, Any],
    assignment_id: str,
    *,
    environ: Mapping[str, str],
    timestamp: int,
    owner_ids: Mapping[str, str] | None = None,
) -> list[OutboundRequest]:
    """The requests that push ``lead`` to the configured CRM, in the order they must be sent.

    ``environ`` holds the secrets (pass ``os.environ``); ``timestamp`` (unix seconds) signs the
    webhook; ``owner_ids`` maps rep ids to CRM user ids (HubSpot, Salesforce).
    """
    if crm.kind == "webhook":
        secret = secret_from(environ, crm.secret_env, "crm.secret_env")
        return webhook_requests(crm, lead, assignment_id, secret=secret, timestamp=timestamp)
    token = secret_from(environ, crm.token_env, "crm.token_env")
    if crm.kind == "hubspot":
        return hubspot_requests(crm, lead, assignment_id, token=token, owner_ids=owner_ids)
    return salesforce_requests(crm, lead, assignment_id, token=token, owner_ids=owner_ids)
