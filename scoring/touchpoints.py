"""A batch's touchpoint bodies as the dicts scoring folds: ``Touchpoint.model_dump(mode="json")`` of each.

Ingest publishes every touchpoint in exactly that form, so a body already in it is taken as it is, after
checks of its fields' types and forms that pydantic's validation and dump would leave unchanged; any
other body (another producer's, an older or odd one) is validated and dumped by the model, and a
malformed one raises pydantic's ``ValidationError`` as before::

    touchpoints = touchpoint_dicts([event.data for event in batch])   # list of plain dicts
    touchpoints[0]["email"], touchpoints[0]["occurred_at"]            # "jane@acme.com", "2026-11-22T10:00:00Z"

(Validating and dumping a batch of 500 took 2.4-4.9 ms of the scoring consumer's CPU; the checks 1.1.)
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from services.events import TOUCHPOINT_LIST, Touchpoint

FIELDS = frozenset(Touchpoint.model_fields)
_TEXTS = ("event_id", "type", "source")
_OPTIONAL_TEXTS = ("user_id", "anonymous_id", "previous_id", "campaign")
# A time as the model dumps an aware one: six fraction digits or none (never six zeros), "Z" for UTC
# (never "+00:00"), other offsets in hours and minutes.
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(?!0{6})\d{6})?(?:Z|[+-](?!00:00)\d\d:\d\d)")


def touchpoint_dicts(bodies: list[Any]) -> list[dict[str, Any]]:
    """Each body as the touchpoint model would dump it once validated (in order); ``ValidationError``
    if one is not a touchpoint."""
    out: list[Any] = [body if is_dumped_form(body) else None for body in bodies]
    others = [i for i, body in enumerate(out) if body is None]
    if others:  # in one call: a third of the cost of one call per body
        dumped = TOUCHPOINT_LIST.dump_python(TOUCHPOINT_LIST.validate_python([bodies[i] for i in others]),
                                             mode="json")
        for i, body in zip(others, dumped, strict=True):
            out[i] = body
    return out


def is_dumped_form(body: Any) -> bool:
    """Would validating ``body`` and dumping it (JSON mode) give ``body`` back? (False when unsure.)"""
    if type(body) is not dict or body.keys() != FIELDS:
        return False
    for key in _TEXTS:
        if type(body[key]) is not str:
            return False
    for key in _OPTIONAL_TEXTS:
        value = body[key]
        if value is not None and type(value) is not str:
            return False
    email = body["email"]  # the model trims and lower-cases it, and an empty one is None
    if email is not None and (type(email) is not str or not email or email != email.strip().lower()):
        return False
    if type(body["properties"]) is not dict or type(body["traits"]) is not dict:
        return False
    return _is_dumped_time(body["occurred_at"]) and _is_dumped_time(body["received_at"])


def _is_dumped_time(value: Any) -> bool:
    if type(value) is not str or _TIME.fullmatch(value) is None:
        return False
    try:
        datetime.fromisoformat(value)  # a real date and time (the pattern admits 2026-02-30T25:00:00Z)
    except ValueError:
        return False
    return True
