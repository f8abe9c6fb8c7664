"""The config's matchers, evaluated over plain nested dicts (a touchpoint or a lead).

A ``when`` block maps dotted paths to matchers; every entry must hold (AND)::

    when = compile_when({"type": "page_view", "properties.path": {"prefix": "/pricing"}})
    when({"type": "page_view", "properties": {"path": "/pricing/teams"}})  # True

Matchers: a plain value means equality; ``{prefix: }``, ``{regex: }``, ``{in: []}``, ``{gte: }``,
``{lte: }``, ``{exists: true}``. Several operators in one mapping must all hold. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]
OPERATORS = ("prefix", "regex", "in", "gte", "lte", "exists")
_MISSING = object()


class MatcherError(ValueError):
    """A matcher in the config cannot be compiled; ``path`` names the key inside the ``when`` block."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def lookup(data: Mapping[str, Any], dotted: str) -> Any:
    """Value at ``a.b.c`` in nested mappings, or the module's ``_MISSING`` sentinel."""
    return _lookup_parts(data, tuple(dotted.split(".")))


def _lookup_parts(data: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    current: Any = data
    for part in parts:
        # ``type is dict`` first: the abstract-class check is the slow path of every rule evaluation.
        if (type(current) is dict or isinstance(current, Mapping)) and part in current:
            current = current[part]
        else:
            return _MISSING
    return current


def is_missing(value: Any) -> bool:
    return value is _MISSING


def _comparable(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Numbers compare as numbers (numeric strings too), strings as strings, anything else not at all."""
    if isinstance(a, bool) or isinstance(b, bool):
        return None
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a, b
    if isinstance(b, int | float) and isinstance(a, str):
        try:
            return float(a), b
        except ValueError:
            return None
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    return None


def _equal(value: Any, expected: Any) -> bool:
    if value is _MISSING:
        return False
    if isinstance(value, str) and isinstance(expected, str):
        return value.casefold() == expected.casefold()
    return bool(value == expected)


def compile_matcher(path: str, spec: Any) -> Callable[[Any], bool]:
    """One matcher as a predicate over the looked-up value; raises ``MatcherError`` on a bad spec."""
    if not isinstance(spec, Mapping):
        return lambda value: _equal(value, spec)
    unknown = [key for key in spec if key not in OPERATORS]
    if unknown or not spec:
        raise MatcherError(path, f"unknown matcher {unknown or '{}'}; use one of {', '.join(OPERATORS)}")
    checks: list[Callable[[Any], bool]] = []
    for op, arg in spec.items():
        checks.append(_compile_operator(path, op, arg))
    if len(checks) == 1:  # the usual case: no generator to run for every value
        return checks[0]
    return lambda value: all(check(value) for check in checks)


def _compile_operator(path: str, op: str, arg: Any) -> Callable[[Any], bool]:
    if op == "prefix":
        if not isinstance(arg, str):
            raise MatcherError(path, "prefix takes a string")
        return lambda v: isinstance(v, str) and v.startswith(arg)
    if op == "regex":
        if not isinstance(arg, str):
            raise MatcherError(path, "regex takes a string")
        try:
            pattern = re.compile(arg)
        except re.error as exc:
            raise MatcherError(path, f"invalid regex {arg!r}: {exc}") from None
        return lambda v: isinstance(v, str) and pattern.search(v) is not None
    if op == "in":
        if not isinstance(arg, list | tuple):
            raise MatcherError(path, "in takes a list")
        options = list(arg)
        return lambda v: v is not _MISSING and any(_equal(v, option) for option in options)
    if op in ("gte", "lte"):
        if isinstance(arg, bool) or not isinstance(arg, int | float | str):
            raise MatcherError(path, f"{op} takes a number or a string")

        def compare(v: Any) -> bool:
            pair = _comparable(v, arg) if v is not _MISSING else None
            if pair is None:
                return False
            return bool(pair[0] >= pair[1]) if op == "gte" else bool(pair[0] <= pair[1])

        return compare
    if not isinstance(arg, bool):
        raise MatcherError(path, "exists takes true or false")
    return lambda v: (v is not _MISSING and v is not None) == arg


def compile_when(when: Mapping[str, Any] | None, where: str = "when") -> Predicate:
    """Compile a whole ``when`` block; an empty or missing block matches everything."""
    if when is None:
        return lambda data: True
    if not isinstance(when, Mapping):
        raise MatcherError(where, "must be a mapping of dotted paths to matchers")
    # Paths split once here, not on every evaluation; a one-entry block (most rules, once the type
    # index has checked ``type``) is one lookup and one check, without a generator.
    compiled = [(tuple(str(path).split(".")), compile_matcher(f"{where}.{path}", spec))
                for path, spec in when.items()]
    if len(compiled) == 1:
        (parts, check), = compiled
        return lambda data: check(_lookup_parts(data, parts))
    return lambda data: all(check(_lookup_parts(data, parts)) for parts, check in compiled)
