"""Every event that crosses the bus, in one module: frozen models with CloudEvents attributes.

An :class:`Event` is the envelope (``id``, ``type``, ``source``, ``time``, ``key``) around a JSON
``data`` object. On Kafka the envelope travels as CloudEvents binary-mode headers (``ce_id``, ...);
on the embedded bus as columns of the log table. The ``data`` shapes are the models below::

    event = Event.new(TOUCHPOINT_RECEIVED, source="ingest/website", key="jane@acme.com",
                      data=touchpoint.model_dump(mode="json"))
    Touchpoint.model_validate(event.data)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

# Event types (CloudEvents ``type``).
TOUCHPOINT_RECEIVED = "handoff.touchpoint.received"
LEAD_SCORED = "handoff.lead.scored"
LEAD_STAGE_CHANGED = "handoff.lead.stage_changed"
LEAD_MERGED = "handoff.lead.merged"
LEAD_ASSIGNED = "handoff.lead.assigned"
LEAD_FEEDBACK = "handoff.lead.feedback"
LEAD_REASSIGN_REQUESTED = "handoff.lead.reassign_requested"
DEAD_LETTER = "handoff.dead_letter"

# Topic names without the configurable prefix (contract section 6).
TOUCHPOINTS = "touchpoints"
LEAD_EVENTS = "lead-events"
ASSIGNMENTS = "assignments"
DLQ = "dlq"
TOPICS = (TOUCHPOINTS, LEAD_EVENTS, ASSIGNMENTS, DLQ)

CE_SPECVERSION = "1.0"


def utcnow() -> datetime:
    """The one place the kernel reads the wall clock (pure functions take ``now`` as an argument)."""
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


@lru_cache(maxsize=256)
def _shared_headers(type: str, source: str, time: datetime, offset: timedelta | None) -> dict[str, str]:
    # Events published together mostly share all but their id: this part is built once. The offset
    # is part of the key: 10:00Z and 12:00+02:00 are equal datetimes (one cache entry without it) but
    # their isoformat() differs. Callers copy the dict, never change it.
    return {"ce_type": type, "ce_source": source, "ce_time": time.isoformat(), "content-type": "application/json"}


@lru_cache(maxsize=256)
def _shared_wire_headers(type: str, source: str, time: datetime, offset: timedelta | None
                         ) -> tuple[tuple[str, bytes], ...]:
    return tuple((k, v.encode()) for k, v in _shared_headers(type, source, time, offset).items())


_CE_SPECVERSION_BYTES = CE_SPECVERSION.encode()


def ce_headers(id: str, type: str, source: str, time: datetime) -> dict[str, str]:
    """CloudEvents Kafka protocol binding, binary content mode."""
    return {"ce_specversion": CE_SPECVERSION, "ce_id": id, **_shared_headers(type, source, time, time.utcoffset())}


def ce_wire_headers(id: str, type: str, source: str, time: datetime) -> list[tuple[str, bytes]]:
    """:func:`ce_headers` as Kafka record headers (encoded), in the same order."""
    return [("ce_specversion", _CE_SPECVERSION_BYTES), ("ce_id", id.encode()),
            *_shared_wire_headers(type, source, time, time.utcoffset())]


class Event(BaseModel):
    """A CloudEvent: ``id`` makes consumers idempotent, ``key`` picks the partition (per-lead order)."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    source: str
    time: datetime
    key: str
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def new(cls, type: str, *, source: str, key: str, data: dict[str, Any], id: str | None = None,
            time: datetime | None = None) -> Event:
        return cls(id=id or new_id(), type=type, source=source, time=time or utcnow(), key=key, data=data)

    def headers(self) -> dict[str, str]:
        """CloudEvents Kafka protocol binding, binary content mode."""
        return ce_headers(self.id, self.type, self.source, self.time)

    def wire_headers(self) -> list[tuple[str, bytes]]:
        """:meth:`headers` as Kafka record headers (encoded), in the same order."""
        return ce_wire_headers(self.id, self.type, self.source, self.time)

    def value(self) -> bytes:
        return orjson.dumps(self.data)

    @classmethod
    def from_wire(cls, key: str, value: bytes, headers: dict[str, str]) -> Event:
        """Rebuild an event from a bus message; raises ``ValueError`` for anything malformed."""
        missing = [h for h in ("ce_id", "ce_type", "ce_source", "ce_time") if h not in headers]
        if missing:
            raise ValueError(f"message lacks CloudEvents headers {missing}")
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"message value is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("message value must be a JSON object")
        return cls(id=headers["ce_id"], type=headers["ce_type"], source=headers["ce_source"],
                   time=datetime.fromisoformat(headers["ce_time"]), key=key, data=data)


@dataclass(frozen=True, slots=True)
class WireEvent:
    """An event made straight in its wire form: the envelope, and ``data`` already encoded as JSON.

    Ingest makes hundreds at a time from touchpoints it has just validated; an :class:`Event` model
    for each (validating its ``data`` dict again) only to encode that dict was some 3 µs of the 30 µs
    of CPU a batched touchpoint costs. Buses publish both kinds; consumers receive :class:`Event` models
    (``Event.from_wire``)."""

    id: str
    type: str
    source: str
    time: datetime
    key: str
    body: bytes

    def headers(self) -> dict[str, str]:
        return ce_headers(self.id, self.type, self.source, self.time)

    def wire_headers(self) -> list[tuple[str, bytes]]:
        return ce_wire_headers(self.id, self.type, self.source, self.time)

    def value(self) -> bytes:
        return self.body


Outgoing = Event | WireEvent  # what a bus publishes


class Touchpoint(BaseModel):
    """One buyer action, normalised by ingest from whatever the source sent (the ``data`` of
    ``handoff.touchpoint.received``). ``type == "identify"`` only links identities and records traits;
    ``type == "alias"`` links ``previous_id`` to ``user_id``."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    type: str
    occurred_at: datetime
    received_at: datetime
    source: str
    email: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    previous_id: str | None = None
    campaign: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)

    @field_validator("email")
    @classmethod
    def _identity_form(cls, value: str | None) -> str | None:
        """Emails are trimmed and lower-cased for identity, whoever built the touchpoint."""
        return value.strip().lower() or None if value else None

    def identity_key(self) -> str:
        """The most stable identity in the event: the partition key on the touchpoints topic."""
        if self.email:
            return f"email:{self.email}"
        if self.user_id:
            return f"user:{self.user_id}"
        if self.anonymous_id:
            return f"anon:{self.anonymous_id}"
        return f"prev:{self.previous_id}"

    def as_match_data(self) -> dict[str, Any]:
        """The plain dict scoring rules match against (``type``, ``properties.*``, ``traits.*``, ...)."""
        return self.model_dump(mode="json")


# A batch of touchpoints validated or dumped in one call: a third of the cost of one call per touchpoint
# (ingest dumps every touchpoint it accepts, scoring validates and dumps every one it consumes).
TOUCHPOINT_LIST: TypeAdapter[list[Touchpoint]] = TypeAdapter(list[Touchpoint])


class LeadScored(BaseModel):
    """``handoff.lead.scored`` on lead-events, key lead id: what the router needs to decide."""

    model_config = ConfigDict(frozen=True)

    lead_id: str
    stage: str
    fit: float
    engagement: float
    total: float
    traits: dict[str, Any] = Field(default_factory=dict)
    company_domain: str | None = None
    email: str | None = None
    rules_hit: list[str] = Field(default_factory=list)  # rule names that earned points (for fast-track)
    source: str | None = None
    campaign: str | None = None
    scored_at: datetime


class LeadAssigned(BaseModel):
    """``handoff.lead.assigned`` on assignments, key lead id: the MQL -> SQL handoff, with its reason."""

    model_config = ConfigDict(frozen=True)

    lead_id: str
    assignment_id: str
    rep_id: str | None  # None: nobody could take it; the lead waits in the fallback queue
    team: str | None
    reason: str
    assigned_at: datetime
    previous_rep_id: str | None = None


class LeadFeedback(BaseModel):
    """``handoff.lead.feedback``: sales' word on a lead (API or CRM callback)."""

    model_config = ConfigDict(frozen=True)

    lead_id: str
    type: str  # accepted | contacted | rejected | won | lost
    rep_id: str | None = None
    reason: str | None = None
    at: datetime


class ReassignRequested(BaseModel):
    """``handoff.lead.reassign_requested``: the SLA breached; route again without these reps."""

    model_config = ConfigDict(frozen=True)

    lead_id: str
    exclude_reps: list[str]
    reason: str
    at: datetime
