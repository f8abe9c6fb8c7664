"""The bodies scoring takes as they are (scoring.touchpoints) are exactly what the touchpoint model's
validation and dump would give; every other body goes through the model, errors included."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from scoring.touchpoints import is_dumped_form, touchpoint_dicts
from services.events import TOUCHPOINT_LIST, Touchpoint
from tests.support.strategies import aware_times, wire_json

_texts = st.text(alphabet=st.sampled_from(["a", "B", " ", "\u0130", "@", ".", "\t"]), max_size=6)

touchpoints = st.builds(
    Touchpoint, event_id=st.text(min_size=1, max_size=8), type=st.sampled_from(["page_view", "identify", "Ünï"]),
    occurred_at=aware_times, received_at=aware_times, source=st.text(max_size=5), email=st.none() | _texts,
    user_id=st.none() | _texts, anonymous_id=st.none() | _texts, previous_id=st.none() | _texts,
    campaign=st.none() | _texts, properties=st.dictionaries(st.text(max_size=4), wire_json, max_size=3),
    traits=st.dictionaries(st.text(max_size=4), wire_json, max_size=3))

# What another producer might send in a field instead: other forms of times, of e-mails, other types.
ODD_VALUES: list[Any] = [
    None, 3, 2.5, True, [], {}, "", " X@Y.io ", "x@y.io", "X@y.io",
    "2026-11-22T10:00:00Z", "2026-11-22T10:00:00+00:00", "2026-11-22T10:00:00-00:00", "2026-11-22T10:00:00.000000Z",
    "2026-11-22T10:00:00.5Z", "2026-11-22T10:00:00.123456Z", "2026-11-22T10:00:00", "2026-11-22 10:00:00Z",
    "2026-02-30T10:00:00Z", "2026-11-22T24:00:00Z", "2026-11-22T10:00:00+05:30", "2026-11-22T10:00:00+24:00",
    "1700000000", "2026-11-22",
]
_odd_values = st.sampled_from(ODD_VALUES)


@st.composite
def bodies(draw: st.DrawFn) -> Any:
    """A touchpoint as the model dumps it, often changed in one or two ways another producer might."""
    body: dict[str, Any] = draw(touchpoints).model_dump(mode="json")
    for _ in range(draw(st.integers(0, 2))):
        change = draw(st.sampled_from(["value", "drop", "extra"]))
        key = draw(st.sampled_from(sorted(body) or ["event_id"]))
        if change == "value":
            body[key] = draw(_odd_values | wire_json)
        elif change == "drop":
            body.pop(key, None)
        else:
            body[f"x{key}"] = 1
    return body


def dumped(body: Any) -> list[dict[str, Any]]:
    return TOUCHPOINT_LIST.dump_python(TOUCHPOINT_LIST.validate_python([body]), mode="json")


def check(body: Any) -> None:
    """``touchpoint_dicts`` gives what the model's validation and dump give, or fails as they do; a body
    taken as it is is exactly what they give."""
    try:
        expected = dumped(body)
    except ValidationError:
        assert not is_dumped_form(body)
        with pytest.raises(ValidationError):
            touchpoint_dicts([body])
        return
    assert touchpoint_dicts([body]) == expected
    if is_dumped_form(body):
        assert expected == [body]


@settings(max_examples=600, deadline=None)
@given(bodies())
def test_a_body_gives_what_the_model_would_or_fails_as_it_would(body: Any) -> None:
    check(body)


@settings(max_examples=200, deadline=None)
@given(touchpoints)
def test_what_the_model_dumps_is_taken_as_it_is(touchpoint: Touchpoint) -> None:
    # Ingest publishes each touchpoint as the model dumps it: the form scoring takes unchanged, whatever
    # the times' offsets (the model writes an offset in hours and minutes, UTC as "Z").
    assert is_dumped_form(touchpoint.model_dump(mode="json"))


def test_a_batch_keeps_its_order_and_validates_only_the_others() -> None:
    ours = Touchpoint(event_id="a", type="page_view", occurred_at=datetime(2026, 11, 22, tzinfo=UTC),
                      received_at=datetime(2026, 11, 22, tzinfo=UTC), source="web", email="jane@acme.com")
    body = ours.model_dump(mode="json")
    other = {**body, "event_id": "b", "email": " Jane@Acme.COM ", "occurred_at": "2026-11-22T10:00:00+00:00"}
    out = touchpoint_dicts([body, other, body])
    assert out[0] is body and out[2] is body  # taken as they are
    assert out[1] == {**body, "event_id": "b", "occurred_at": "2026-11-22T10:00:00Z"}
    with pytest.raises(ValidationError, match="occurred_at"):
        touchpoint_dicts([body, {**body, "occurred_at": "yesterday"}])


_BASE = Touchpoint(event_id="e1", type="page_view", occurred_at=datetime(2026, 11, 22, 10, tzinfo=UTC),
                   received_at=datetime(2026, 11, 22, 10, 0, 1, 500, tzinfo=UTC), source="web",
                   email="jane@acme.com", user_id="u1", anonymous_id="a1", previous_id="p1", campaign="c",
                   properties={"path": "/pricing"}, traits={"title": "VP"}).model_dump(mode="json")



@pytest.mark.parametrize("key", sorted(_BASE))
@pytest.mark.parametrize("value", ODD_VALUES)
def test_each_other_form_of_each_field_gives_what_the_model_would(key: str, value: Any) -> None:
    check({**_BASE, key: value})
    check({k: v for k, v in _BASE.items() if k != key})  # and without the field
