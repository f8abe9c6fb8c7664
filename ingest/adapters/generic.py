"""``generic`` sources: the native payload IS the touchpoint schema (one, or a batch).

``POST /webhooks/{source_id}`` of a ``kind: generic`` source accepts either one touchpoint or
``{"touchpoints": [...]}`` (at most 500), validated exactly like ``/v1/touchpoints``::

    parse({"event_id": "e1", "type": "page_view", "email": "jane@acme.com"}, "website", now)
    parse({"touchpoints": [{...}, {...}]}, "website", now)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ingest.schemas import to_touchpoints
from services.events import Touchpoint


def parse(payload: Any, source_id: str, received_at: datetime) -> list[Touchpoint]:
    """Touchpoints of a generic webhook body; :class:`~ingest.body.InvalidPayload` names bad fields."""
    is_batch = isinstance(payload, dict) and "touchpoints" in payload and "type" not in payload
    return to_touchpoints(payload, source_id, received_at, batch=is_batch)
