"""The hand-written fast paths of ingest agree with the general code they stand in for."""

from __future__ import annotations

import gc
import sys
from datetime import datetime
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.body import deeper_than, json_depth, parse_json
from ingest.writer import to_event, to_events
from services.bus.kafka import KafkaBus
from services.events import TOUCHPOINT_RECEIVED, Event, Touchpoint
from tests.support.strategies import aware_times, wire_json


@settings(max_examples=300, deadline=None)
@given(value=wire_json, limit=st.integers(0, 10))
def test_deeper_than_agrees_with_json_depth(value: Any, limit: int) -> None:
    assert deeper_than(value, limit) == (json_depth(value) > limit)


def test_parse_json_refuses_deep_nesting_whatever_the_bracket_count() -> None:
    from ingest.body import BadBody

    ok = b'{"a": "' + b"[" * 40 + b'"}'  # many brackets, all inside a string
    assert parse_json(ok) == {"a": "[" * 40}
    deep = b"[" * 33 + b"]" * 33
    try:
        parse_json(deep)
    except BadBody:
        pass
    else:
        raise AssertionError("33 levels were accepted")


@settings(max_examples=200, deadline=None)
@given(occurred=aware_times, received=aware_times, props=st.dictionaries(st.text(max_size=4), wire_json, max_size=4),
       traits=st.dictionaries(st.text(max_size=4), wire_json, max_size=3),
       email=st.none() | st.just("jane@acme.com"), campaign=st.none() | st.text(max_size=5))
def test_event_data_is_the_touchpoints_model_dump_json(occurred: datetime, received: datetime,
                                                        props: dict[str, Any], traits: dict[str, Any],
                                                        email: str | None, campaign: str | None) -> None:
    tp = Touchpoint(event_id="e1", type="page_view", occurred_at=occurred, received_at=received, source="web",
                    email=email, anonymous_id="a1", campaign=campaign, properties=props, traits=traits)
    other = tp.model_copy(update={"event_id": "e2", "email": None, "user_id": "u2"})
    first, second = to_events([tp, other])
    # What a consumer gets back is the touchpoint's JSON dump, in the model's field order.
    back = [Event.from_wire(e.key, e.value(), e.headers()) for e in (first, second)]
    assert back[0].data == tp.model_dump(mode="json") and back[1].data == other.model_dump(mode="json")
    assert list(back[0].data) == list(Touchpoint.model_fields)
    assert (first.key, first.id, second.key, second.id) == (tp.identity_key(), "e1", other.identity_key(), "e2")
    assert (back[0].type, back[0].source, back[0].time) == (TOUCHPOINT_RECEIVED, "ingest/web", tp.received_at)
    assert to_event(tp) == first


@given(key=st.binary(min_size=1, max_size=40), count=st.integers(1, 12))
def test_kafka_partition_choice_is_the_producers_default(key: bytes, count: int) -> None:
    bus = KafkaBus("127.0.0.1:9")
    partitions = list(range(count))
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert bus._partition_of("t", key, partitions) == expected
    assert bus._partition_of("t", key, partitions) == expected  # remembered
    assert bus._partition_of("t", key, [*partitions, count]) == DefaultPartitioner()(key, [*partitions, count],
                                                                                       [*partitions, count])


def test_tune_gc_freezes_the_startup_heap_and_raises_the_threshold() -> None:
    from services.serve import GC_GEN0_THRESHOLD, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_run_loop_uses_uvloop_and_falls_back_without_it(monkeypatch: Any) -> None:
    import asyncio

    from services.serve import run_loop

    async def loop_kind() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_loop(loop_kind()).startswith("uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert run_loop(loop_kind()).startswith("asyncio")
