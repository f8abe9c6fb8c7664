"""Property tests: no input of any shape makes an adapter raise anything but an IngestError,
and whatever they return is a valid, normalised touchpoint."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.adapters import adapter_for, generic, hubspot, mautic, segment
from ingest.body import IngestError
from ingest.schemas import MAX_ID_LEN, normalize_email, to_touchpoints
from services.events import Touchpoint
from tests.unit.ingest.payloads import (
    RECEIVED_AT,
    json_values,
    load,
    mutated,
    python_values,
    single_key_mutations,
    tricky_values,
)

FIXTURES = {
    "generic": ["generic_touchpoint.json", "generic_batch.json"],
    "segment": ["segment_batch.json", "segment_track_browser.json", "segment_page_browser.json",
                "segment_identify.json", "segment_alias.json"],
    "mautic": ["mautic_queued.json", "mautic_test_payload.json"],
    "hubspot": ["hubspot_subscription_events.json", "hubspot_workflow_contact.json"],
}
PARSERS: dict[str, Callable[[Any, str, datetime], list[Touchpoint]]] = {
    "generic": generic.parse, "segment": segment.parse, "mautic": mautic.parse, "hubspot": hubspot.parse}
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(parser: Callable[[Any, str, datetime], list[Touchpoint]], payload: Any) -> None:
    try:
        touchpoints = parser(payload, "src", RECEIVED_AT)
    except IngestError as exc:
        assert 400 <= exc.status < 500
        assert isinstance(exc.to_body()["error"]["message"], str)
        return
    for tp in touchpoints:
        assert isinstance(tp, Touchpoint)
        assert tp.type and tp.event_id and len(tp.event_id) <= MAX_ID_LEN
        assert tp.email or tp.user_id or tp.anonymous_id or tp.previous_id
        assert tp.email is None or normalize_email(tp.email) == tp.email
        assert tp.occurred_at.tzinfo is not None
        assert tp.source == "src"
        tp.model_dump(mode="json")  # what the writer will serialise


@pytest.mark.parametrize("kind", list(PARSERS))
def test_every_fixture_parses(kind: str) -> None:
    for name in FIXTURES[kind]:
        assert PARSERS[kind](load(name), "src", RECEIVED_AT), name


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k, names in FIXTURES.items() for n in names])
def test_every_single_key_mutation_of_real_payloads_only_raises_ingest_errors(kind: str, name: str) -> None:
    for key, new, payload in single_key_mutations(load(name)):
        try:
            _check(PARSERS[kind], payload)
        except Exception as exc:
            raise AssertionError(f"{name}: setting every {key!r} to {new!r} raised {exc!r}") from exc


@pytest.mark.parametrize("kind", list(PARSERS))
@FAST
@given(payload=json_values)
def test_arbitrary_json_only_raises_ingest_errors(kind: str, payload: Any) -> None:
    _check(PARSERS[kind], payload)


@pytest.mark.parametrize("kind", list(PARSERS))
@FAST
@given(data=st.data())
def test_mutated_real_payloads_only_raise_ingest_errors(kind: str, data: st.DataObject) -> None:
    _check(PARSERS[kind], data.draw(mutated(FIXTURES[kind])))


@pytest.mark.parametrize("kind", list(PARSERS))
@settings(max_examples=60, deadline=None)
@given(payload=python_values | st.from_type(type).flatmap(st.from_type))
def test_non_json_python_values_only_raise_ingest_errors(kind: str, payload: Any) -> None:
    _check(PARSERS[kind], payload)


@FAST
@given(payload=st.dictionaries(st.sampled_from(["event_id", "type", "occurred_at", "email", "user_id",
                                                "anonymous_id", "previous_id", "campaign", "properties",
                                                "traits", "source"]), tricky_values, max_size=11),
       batch=st.booleans())
def test_touchpoint_schema_only_raises_ingest_errors(payload: dict[str, Any], batch: bool) -> None:
    body = {"touchpoints": [payload, payload]} if batch else payload
    _check(lambda p, s, r: to_touchpoints(p, s, r, batch=batch), body)


@FAST
@given(data=st.data())
def test_segment_single_endpoints_only_raise_ingest_errors(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["track", "identify", "page", "alias", "batch", "screen", "group"]))
    payload = data.draw(mutated(FIXTURES["segment"]) | json_values)
    _check(lambda p, s, r: segment.parse(p, s, r, kind=kind), payload)


def test_adapter_registry() -> None:
    assert adapter_for("mautic") is mautic.parse
    assert adapter_for("segment") is segment.parse
    with pytest.raises(KeyError):
        adapter_for("marketo")
