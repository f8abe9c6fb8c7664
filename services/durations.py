"""Durations as people write them in the config: ``90s``, ``15m``, ``4h``, ``2d``.

>>> parse_duration("4h")
datetime.timedelta(seconds=14400)
>>> format_duration(timedelta(minutes=90))
'90m'
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """Parse ``<number><s|m|h|d>``; a bare number is seconds. Raises ``ValueError`` with a hint."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool):
        raise ValueError("a duration must be written like 90s, 15m, 4h or 2d")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _PATTERN.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a duration; write it like 90s, 15m, 4h or 2d")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of ``value`` in the config's units."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
