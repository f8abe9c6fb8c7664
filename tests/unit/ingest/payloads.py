"""Helpers for the ingest unit tests: the stored payload fixtures and hypothesis strategies."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "payloads"
RECEIVED_AT = datetime(2026, 11, 22, 10, 10, 0, tzinfo=UTC)


def load(name: str) -> Any:
    """A fresh copy of ``tests/fixtures/payloads/<name>``, parsed."""
    return orjson.loads((FIXTURES / name).read_bytes())


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# Any JSON value (what orjson can hand an adapter), kept small so examples stay fast.
json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
# Beyond JSON: what a careless caller might pass (the adapters must still only raise IngestError).
python_values = st.recursive(
    json_scalars | st.binary(max_size=8) | st.builds(object) | st.datetimes(),
    lambda children: (st.lists(children, max_size=4) | st.tuples(children, children)
                      | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=4)),
    max_leaves=15,
)
# Values an attacker would try in a field that normally holds an id, time or address.
tricky_values = (json_values | st.sampled_from([
    "", " ", "0", "-1", "1e309", "9" * 40, "2026-13-45T99:99:99Z", "2026-11-22T10:00:00Z", "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+14:00", "not-an-email", "a@b", "@@", "x" * 500, "\u0000", "%3A%2F", "https://", "//",
    "http://[::1", 10**20, -(10**20), 1.5e300, True, [], {},
]))


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value)
    if isinstance(value, list):
        return list(range(len(value)))
    return []


@st.composite
def _walk(draw: st.DrawFn, value: Any) -> tuple[Any, ...]:
    """A random path chosen level by level (not uniformly over all nodes), so shallow structural keys
    such as ``submission`` or ``fields`` are hit as often as deep leaves."""
    path: tuple[Any, ...] = ()
    while (keys := _children(value)) and draw(st.integers(min_value=0, max_value=3)) > 0:
        key = draw(st.sampled_from(keys))
        path, value = (*path, key), value[key]
    return path


def _keyed_paths(value: Any, prefix: tuple[Any, ...] = ()) -> dict[str, list[tuple[Any, ...]]]:
    """Every path that ends in a dict key, grouped by that key's name."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for key in _children(value):
        path = (*prefix, key)
        if isinstance(value, dict):
            out.setdefault(str(key), []).append(path)
        for name, paths in _keyed_paths(value[key], path).items():
            out.setdefault(name, []).extend(paths)
    return out


REPLACEMENTS: list[Any] = [None, "", -1, 1.5, True, [], {"value": {}}, "x" * 300, "not@valid", 10**20]
class _Delete:
    def __repr__(self) -> str:
        return "<key deleted>"


DELETE = _Delete()


def single_key_mutations(payload: Any) -> list[tuple[str, Any, Any]]:
    """(key name, replacement, mutated payload) for every key name in ``payload`` and every value in
    ``REPLACEMENTS`` (or deletion), applied to all occurrences of that key: an exhaustive sweep."""
    out: list[tuple[str, Any, Any]] = []
    for name, paths in sorted(_keyed_paths(payload).items()):
        for new in [DELETE, *REPLACEMENTS]:
            copy = orjson.loads(orjson.dumps(payload))
            for path in paths:
                parent = copy
                try:
                    for key in path[:-1]:
                        parent = parent[key]
                    if new is DELETE:
                        del parent[path[-1]]
                    else:
                        parent[path[-1]] = orjson.loads(orjson.dumps(new))  # no shared instances
                except (KeyError, IndexError, TypeError):
                    continue  # an enclosing occurrence of the same key was already replaced
            out.append((name, new, copy))
    return out


@st.composite
def _targets(draw: st.DrawFn, payload: Any) -> list[tuple[Any, ...]]:
    """Paths to mutate: one found by a random walk, or every occurrence of one key name (``fields``,
    ``id``, ``timestamp``, ...), since the same contact object appears in many events."""
    keyed = _keyed_paths(payload)
    by_key: bool = draw(st.booleans())
    if keyed and by_key:
        paths = keyed[draw(st.sampled_from(sorted(keyed)))]
        return paths if draw(st.booleans()) else [draw(st.sampled_from(paths))]
    return [draw(_walk(payload))]


@st.composite
def mutated(draw: st.DrawFn, fixture_names: list[str]) -> Any:
    """A real fixture with a few nested values replaced or deleted: explores the adapters' deep paths."""
    payload = load(draw(st.sampled_from(fixture_names)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        delete = draw(st.booleans())
        new = draw(tricky_values)
        for path in draw(_targets(payload)):
            if not path:
                return new
            try:
                parent = payload
                for key in path[:-1]:
                    parent = parent[key]
                if isinstance(parent, dict) and delete:
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = new
            except (KeyError, IndexError, TypeError):
                continue  # an enclosing value on this path was already replaced (by a string, say)
    return payload
