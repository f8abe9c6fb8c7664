"""The inbound touchpoint schema and the helpers every adapter shares to build a ``Touchpoint``.

``POST /v1/touchpoints`` carries one touchpoint, ``/v1/touchpoints/batch`` ``{"touchpoints": [...]}``
(at most 500). Both become :class:`services.events.Touchpoint` objects::

    to_touchpoints({"type": "Page View", "email": " Jane.Doe@Acme.com ", "properties": {"path": "/pricing"}},
                   source_id="website", received_at=now, batch=False)
    # [Touchpoint(type='page_view', email='jane.doe@acme.com', occurred_at=now, source='website', ...)]

Rules (contract section 3):

- ``type`` is required and normalised: lower-cased, runs of spaces/dashes become one underscore
  (``"Demo Requested"`` -> ``demo_requested``).
- one of ``email``/``user_id``/``anonymous_id`` is required; ``email`` is trimmed, lower-cased and
  loosely checked (``local@domain.tld``, no spaces); ids may be strings or integers.
- ``occurred_at`` is an ISO 8601 string (no zone means UTC), default ``received_at``; more than a day
  ahead of ``received_at`` is refused (usually milliseconds sent as seconds, or a wrong zone).
- ``event_id`` makes delivery idempotent. When it is missing a random uuid4 is generated, so a
  redelivery of that touchpoint can NOT be recognised as a duplicate: senders should always set it.
- ``source`` in the body is ignored: the authenticated source id is recorded.
- unknown fields are ignored; ``properties``/``traits`` must be JSON objects.

Every violation is reported at once as :class:`~ingest.body.InvalidPayload` (422) with one detail
per bad field, named by its path (``touchpoints.3.email``).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ingest.body import InvalidPayload
from services.events import Touchpoint, new_id

MAX_BATCH = 500
MAX_ID_LEN = 200
MAX_TYPE_LEN = 100
MAX_EMAIL_LEN = 320
MAX_CAMPAIGN_LEN = 200
MAX_DETAILS = 50  # error details reported per request; the message says how many more there were
FUTURE_TOLERANCE = timedelta(days=1)

_SEPARATORS = re.compile(r"[\s\-]+")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
IDENTITY_MESSAGE = "one of email, user_id or anonymous_id is required"


# ---------------------------------------------------------------------------------------------
# Shared helpers (pure; adapters build their touchpoints with these)
# ---------------------------------------------------------------------------------------------

def normalize_type(name: str) -> str:
    """``"Demo Requested"`` -> ``"demo_requested"``: trimmed, lower-cased, spaces/dashes -> ``_``."""
    return _SEPARATORS.sub("_", name.strip()).lower()


def normalize_email(value: Any) -> str | None:
    """Trimmed, lower-cased email, or ``None`` when ``value`` is not a plausible address."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    if len(email) > MAX_EMAIL_LEN or not _EMAIL.fullmatch(email):
        return None
    return email


def as_id(value: Any) -> str | None:
    """A sender id as a string: strings are trimmed, integers printed, anything else is ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def parse_iso(value: Any) -> datetime | None:
    """An aware datetime from an ISO 8601 string (``Z`` and offsets understood, naive = UTC)."""
    if not isinstance(value, str) or not 8 <= len(value) <= 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def from_epoch_ms(value: Any) -> datetime | None:
    """An aware datetime from Unix milliseconds (int, float or digit string), else ``None``."""
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 16:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def path_from_url(url: Any) -> str | None:
    """The path of a URL (``https://a.com/pricing?x=1`` -> ``/pricing``; no path -> ``/``)."""
    if not isinstance(url, str) or not url.strip():
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if not parts.scheme and not parts.netloc and not url.startswith("/"):
        return None
    return parts.path or "/"


def short_hash(*parts: Any) -> str:
    """A stable 32-hex-digit digest of JSON-able parts: a derived id when a source sends none."""
    try:
        blob = orjson.dumps(parts, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # only non-JSON Python objects get here
        blob = repr(parts).encode("utf-8", "replace")
    return hashlib.sha256(blob).hexdigest()[:32]


def clamp_future(occurred_at: datetime, received_at: datetime) -> datetime:
    """Native sources' clocks are trusted up to ``FUTURE_TOLERANCE``; later times become receipt time."""
    return received_at if occurred_at > received_at + FUTURE_TOLERANCE else occurred_at


def make_touchpoint(
    field: str,
    *,
    event_id: str,
    type: str,
    occurred_at: datetime,
    received_at: datetime,
    source: str,
    email: str | None = None,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    previous_id: str | None = None,
    campaign: str | None = None,
    properties: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None,
) -> Touchpoint:
    """Build a Touchpoint from adapter-extracted values, enforcing the shared limits.

    Raises :class:`InvalidPayload` (naming ``field``, the native event's path) for a missing
    identity, an over-long id or type; adapters therefore never leak pydantic errors.
    """
    errors: list[dict[str, str]] = []
    prefix = f"{field}." if field else ""
    if not (email or user_id or anonymous_id or (type == "alias" and previous_id)):
        errors.append({"field": f"{prefix}email", "message": IDENTITY_MESSAGE})
    for name, value, limit in (("event_id", event_id, MAX_ID_LEN), ("user_id", user_id, MAX_ID_LEN),
                               ("anonymous_id", anonymous_id, MAX_ID_LEN),
                               ("previous_id", previous_id, MAX_ID_LEN), ("type", type, MAX_TYPE_LEN)):
        if value is not None and len(value) > limit:
            errors.append({"field": f"{prefix}{name}", "message": f"must be at most {limit} characters"})
    if not type:
        errors.append({"field": f"{prefix}type", "message": "must not be empty"})
    if errors:
        raise InvalidPayload(errors)
    if campaign is not None and len(campaign) > MAX_CAMPAIGN_LEN:
        campaign = campaign[:MAX_CAMPAIGN_LEN]
    try:
        return Touchpoint(
            event_id=event_id, type=type, occurred_at=occurred_at, received_at=received_at,
            source=source, email=email, user_id=user_id, anonymous_id=anonymous_id,
            previous_id=previous_id, campaign=campaign, properties=properties or {}, traits=traits or {},
        )
    except ValidationError as exc:  # defensive: only reachable with non-JSON Python input
        raise InvalidPayload([{"field": f"{prefix}{'.'.join(map(str, e['loc']))}".rstrip("."),
                               "message": e["msg"]} for e in exc.errors()]) from None


def fail_many(errors: list[dict[str, str]]) -> InvalidPayload:
    """One InvalidPayload for many details, capped at ``MAX_DETAILS`` so the answer stays small."""
    if len(errors) <= MAX_DETAILS:
        return InvalidPayload(errors)
    shown = errors[:MAX_DETAILS]
    return InvalidPayload(shown, f"the payload has {len(errors)} invalid fields; the first "
                                 f"{MAX_DETAILS} are listed in details")


# ---------------------------------------------------------------------------------------------
# The generic touchpoint schema
# ---------------------------------------------------------------------------------------------

def _id_or_none(value: Any) -> Any:
    # Integer ids are common (database keys); they become strings. Other types fail validation.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return value


# Strict strings: no silent coercion of numbers or lists into text (ids get _id_or_none first).
_IdText = Annotated[StrictStr, Field(max_length=MAX_ID_LEN)]
_Id = Annotated[_IdText | None, BeforeValidator(_id_or_none)]
_When = Annotated[StrictStr, Field(max_length=64)]
_Email = Annotated[StrictStr, Field(max_length=MAX_EMAIL_LEN)]
_Campaign = Annotated[StrictStr, Field(max_length=MAX_CAMPAIGN_LEN)]


class TouchpointIn(BaseModel):
    """One inbound touchpoint as sent to ``/v1/touchpoints`` (see the module docstring).

    Strings are stripped by the validators below (Python's ``str.strip``), not by pydantic, so that
    :func:`_fast_path` can mirror these rules exactly.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: _Id = None
    type: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TYPE_LEN)]
    occurred_at: _When | None = None
    email: _Email | None = None
    user_id: _Id = None
    anonymous_id: _Id = None
    previous_id: _Id = None
    campaign: _Campaign | None = None
    properties: dict[str, Any] = Field(default_factory=dict, strict=True)
    traits: dict[str, Any] = Field(default_factory=dict, strict=True)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        normalized = normalize_type(value)
        if not normalized.strip("_"):
            raise ValueError("must contain a letter or digit, e.g. 'page_view'")
        return normalized

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        email = normalize_email(value)
        if email is None:
            raise ValueError("is not a valid email address (expected name@domain.tld)")
        return email

    @field_validator("occurred_at")
    @classmethod
    def _occurred_at(cls, value: str | None) -> str | None:
        if value is not None and parse_iso(value) is None:
            raise ValueError("must be an ISO 8601 date-time such as 2026-11-22T10:00:00Z")
        return value

    @field_validator("campaign")
    @classmethod
    def _campaign(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @model_validator(mode="after")
    def _identity(self) -> TouchpointIn:
        if not (self.email or self.user_id or self.anonymous_id):
            raise ValueError(IDENTITY_MESSAGE)
        if self.type == "alias" and not (self.previous_id and self.user_id):
            raise ValueError("an alias needs both previous_id and user_id")
        return self


def _loc_to_field(prefix: str, loc: tuple[Any, ...], error_type: str) -> str:
    if not loc:
        # Whole-object errors: the identity rule is reported on ``email``; others on the object.
        return f"{prefix}email" if error_type == "value_error" else prefix.rstrip(".")
    return prefix + ".".join(str(part) for part in loc)


def _validate_one(item: Any, prefix: str, errors: list[dict[str, str]]) -> TouchpointIn | None:
    if not isinstance(item, dict):
        errors.append({"field": prefix.rstrip("."), "message": "must be a JSON object (a touchpoint)"})
        return None
    try:
        return TouchpointIn.model_validate(item)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_context=False, include_input=False):
            message = err["msg"].removeprefix("Value error, ")
            if not err["loc"] and err["type"] == "value_error" and "alias" in message:
                field = f"{prefix}previous_id"
            else:
                field = _loc_to_field(prefix, err["loc"], err["type"])
            errors.append({"field": field, "message": message})
        return None


def _from_model(model: TouchpointIn, source_id: str, received_at: datetime) -> Touchpoint:
    occurred = parse_iso(model.occurred_at) if model.occurred_at is not None else received_at
    return Touchpoint(
        event_id=model.event_id or new_id(), type=model.type, occurred_at=occurred or received_at,
        received_at=received_at, source=source_id, email=model.email, user_id=model.user_id,
        anonymous_id=model.anonymous_id, previous_id=model.previous_id, campaign=model.campaign,
        properties=model.properties, traits=model.traits,
    )


_BAD = object()  # an id value the model would refuse


def _fast_id(value: Any) -> Any:
    """An id as :data:`_Id` makes it (stripped string or None), or ``_BAD``."""
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        value = value.strip() or None
    elif kind is int:
        value = str(value)
    else:
        return _BAD
    if value is not None and len(value) > MAX_ID_LEN:
        return _BAD
    return value


# Raw type -> normalised, remembered: senders use a small vocabulary.
_fast_type = lru_cache(maxsize=1024)(normalize_type)


def _fast_path(item: dict[str, Any], source_id: str, received_at: datetime) -> Touchpoint | None:
    """The same rules as :class:`TouchpointIn` in plain Python, several times faster for the common,
    valid touchpoint. ``None`` whenever anything is off: the model then decides and explains.
    A property test checks that both agree on every touchpoint this accepts."""
    get = item.get
    raw_type = get("type")
    if type(raw_type) is not str or not 1 <= len(raw_type) <= MAX_TYPE_LEN:
        return None
    tp_type = _fast_type(raw_type)
    if not tp_type.strip("_"):
        return None
    event_id = _fast_id(get("event_id"))
    user_id = _fast_id(get("user_id"))
    anonymous_id = _fast_id(get("anonymous_id"))
    previous_id = _fast_id(get("previous_id"))
    if event_id is _BAD or user_id is _BAD or anonymous_id is _BAD or previous_id is _BAD:
        return None
    email = get("email")
    if email is not None:
        if type(email) is not str or len(email) > MAX_EMAIL_LEN:
            return None
        if email.strip():
            email = normalize_email(email)
            if email is None:
                return None
        else:
            email = None
    if not (email or user_id or anonymous_id) or (tp_type == "alias" and not (previous_id and user_id)):
        return None
    occurred_raw = get("occurred_at")
    occurred = received_at
    if occurred_raw is not None:
        if type(occurred_raw) is not str or len(occurred_raw) > 64:
            return None
        parsed = parse_iso(occurred_raw)
        if parsed is None:
            return None
        occurred = parsed
    campaign = get("campaign")
    if campaign is not None:
        if type(campaign) is not str or len(campaign) > MAX_CAMPAIGN_LEN:
            return None
        campaign = campaign.strip() or None
    properties = get("properties", _EMPTY)
    traits = get("traits", _EMPTY)
    if type(properties) is not dict or type(traits) is not dict:
        return None
    if (properties and not all(type(k) is str for k in properties)) or \
            (traits and not all(type(k) is str for k in traits)):
        return None
    return Touchpoint(
        event_id=event_id or new_id(), type=tp_type, occurred_at=occurred, received_at=received_at,
        source=source_id, email=email, user_id=user_id, anonymous_id=anonymous_id, previous_id=previous_id,
        campaign=campaign, properties=properties, traits=traits,
    )


_EMPTY: dict[str, Any] = {}


def to_touchpoints(payload: Any, source_id: str, received_at: datetime, batch: bool) -> list[Touchpoint]:
    """Validate a ``/v1/touchpoints`` (``batch=False``) or ``/v1/touchpoints/batch`` body.

    Raises :class:`InvalidPayload` listing every bad field (``touchpoints.<i>.<field>`` in a batch).
    """
    items: list[tuple[str, Any]]
    if batch:
        if not isinstance(payload, dict) or "touchpoints" not in payload:
            raise InvalidPayload.single("touchpoints", 'body must be {"touchpoints": [ ... ]}')
        raw = payload["touchpoints"]
        if not isinstance(raw, list):
            raise InvalidPayload.single("touchpoints", "must be an array of touchpoints")
        if not raw:
            raise InvalidPayload.single("touchpoints", "must contain at least one touchpoint")
        if len(raw) > MAX_BATCH:
            raise InvalidPayload.single("touchpoints", f"holds {len(raw)} touchpoints; at most {MAX_BATCH} "
                                                       "per batch, split it")
        items = [(f"touchpoints.{i}.", item) for i, item in enumerate(raw)]
    else:
        items = [("", payload)]

    errors: list[dict[str, str]] = []
    out: list[Touchpoint] = []
    limit = received_at + FUTURE_TOLERANCE
    for prefix, item in items:
        tp = _fast_path(item, source_id, received_at) if isinstance(item, dict) else None
        if tp is None:
            model = _validate_one(item, prefix, errors)
            if model is None:
                continue
            tp = _from_model(model, source_id, received_at)
        if tp.occurred_at > limit:
            errors.append({"field": f"{prefix}occurred_at",
                           "message": "is more than a day in the future; send UTC or an explicit offset"})
            continue
        out.append(tp)
    if errors:
        raise fail_many(errors)
    return out
