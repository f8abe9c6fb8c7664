"""Readable fragments for the router's reasons: numbers, ``when`` blocks, a lead's matched values.

A reason is read by a sales manager asking "why did this lead go to Ben?", so it names the rule and
the values that decided, in config terms::

    describe_when({"traits.email_domain": {"in": ["competitor.com"]}})
    # 'traits.email_domain in [competitor.com]'
    describe_values({"traits.country": {"in": ["DE", "FR"]}}, {"traits": {"country": "DE"}})
    # 'traits.country DE'
    fmt_number(39.999, versus=40)   # '39.999', never a misleading '40'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.matchers import is_missing, lookup


def fmt_number(value: float, versus: float | None = None) -> str:
    """``25.0`` -> ``25``, ``12.3456`` -> ``12.35``; more digits when rounding would equal ``versus``.

    Decayed engagement is rarely a whole number; two decimals read well, but "engagement 40 < 40"
    would not, so a value that differs from the threshold it is compared with keeps enough digits.
    """
    for digits in (2, 4, 6, 9):
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
        if versus is None or value == versus or text != fmt_number(versus):
            return "0" if text == "-0" else text
    return repr(value)


def _fmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return fmt_number(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt_value(v) for v in value) + "]"
    return str(value)


def _describe_matcher(path: str, spec: Any) -> str:
    if not isinstance(spec, Mapping):
        return f"{path} = {_fmt_value(spec)}"
    parts = []
    for op, arg in spec.items():
        if op == "prefix":
            parts.append(f"{path} starts with {arg}")
        elif op == "regex":
            parts.append(f"{path} matches /{arg}/")
        elif op == "in":
            parts.append(f"{path} in {_fmt_value(arg)}")
        elif op == "gte":
            parts.append(f"{path} >= {_fmt_value(arg)}")
        elif op == "lte":
            parts.append(f"{path} <= {_fmt_value(arg)}")
        elif op == "exists":
            parts.append(f"{path} {'exists' if arg else 'missing'}")
        else:  # compile_when refuses unknown operators; keep the text total anyway
            parts.append(f"{path} {op} {_fmt_value(arg)}")
    return " and ".join(parts)


def describe_when(when: Mapping[str, Any] | None) -> str:
    """The matcher as written: ``traits.email_domain in [competitor.com]``; empty -> ``catch-all``."""
    if not when:
        return "catch-all"
    return " and ".join(_describe_matcher(path, spec) for path, spec in when.items())


def describe_values(when: Mapping[str, Any] | None, data: Mapping[str, Any]) -> str:
    """The data's values at the ``when`` block's paths: ``traits.country DE``; empty -> ``catch-all``."""
    if not when:
        return "catch-all"
    parts = []
    for path in when:
        value = lookup(data, path)
        parts.append(f"{path} {'missing' if is_missing(value) else _fmt_value(value)}")
    return ", ".join(parts)
