"""Payload adapters: each source kind's native body -> normalised ``Touchpoint`` objects.

Every adapter is ``parse(payload, source_id, received_at) -> list[Touchpoint]``, pure, and raises
only :class:`~ingest.body.IngestError` subclasses (``InvalidPayload`` naming each bad field) whatever
the payload holds::

    parser = adapter_for(source.kind)          # "generic" | "segment" | "hubspot" | "mautic"
    touchpoints = parser(payload, source.id, received_at)

Event ids are derived from the native ids (``mautic:form_on_submit:13``, ``hubspot:4711``,
Segment's ``messageId``), so a redelivered webhook yields the same ids and is counted once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ingest.adapters import generic, hubspot, mautic, segment
from services.events import Touchpoint

Parser = Callable[[Any, str, datetime], list[Touchpoint]]
KINDS = ("generic", "segment", "hubspot", "mautic")


def adapter_for(kind: str) -> Parser:
    """The ``parse`` function of a source kind; ``KeyError`` for a kind the config cannot name."""
    match kind:
        case "generic":
            return generic.parse
        case "segment":
            return segment.parse
        case "hubspot":
            return hubspot.parse
        case "mautic":
            return mautic.parse
    raise KeyError(f"unknown source kind {kind!r}; expected one of {', '.join(KINDS)}")


__all__ = ["KINDS", "Parser", "adapter_for", "generic", "hubspot", "mautic", "segment"]
