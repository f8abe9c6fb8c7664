"""Hypothesis strategies shared by the property tests of the wire forms (ingest's fast paths, scoring's
dumped-form check)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

# Integers as a touchpoint can hold them: every body is parsed by orjson (``ingest.body.parse_json``),
# which reads an integer outside [-2**63, 2**64 - 1] as a float, so no larger one reaches the wire (and
# orjson, the consumers' parser too, would read such an integer back as a float).
wire_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
# Small JSON values as orjson reads them off the wire.
wire_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | wire_ints | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=30)
# Aware times in UTC and in other offsets, odd ones included (seconds and microseconds in the offset).
zones = st.sampled_from([UTC, timezone(timedelta(0)), timezone(timedelta(hours=2)),
                         timezone(timedelta(hours=-5, minutes=-30)), timezone(timedelta(hours=1, seconds=30)),
                         timezone(timedelta(minutes=59, microseconds=7))])
aware_times = st.builds(lambda dt, zone: dt.replace(tzinfo=zone),
                        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), zones)
