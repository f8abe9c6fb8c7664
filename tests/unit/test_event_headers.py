"""An event's Kafka record headers are its CloudEvents headers, encoded, whatever its time's offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from services.events import Event

offsets = st.sampled_from([timedelta(0), timedelta(hours=2), timedelta(hours=-5, minutes=-30),
                           timedelta(seconds=1)])
times = st.builds(lambda d, off: d.replace(tzinfo=timezone(off)),
                  st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)), offsets)
texts = st.text(min_size=1, max_size=20)


@given(st.lists(st.tuples(texts, st.sampled_from(["a.type", "b.type"]), st.sampled_from(["s1", "s2"]), times),
                min_size=1, max_size=20))
def test_wire_headers_are_the_encoded_cloudevents_headers(specs: list[tuple[str, str, str, datetime]]) -> None:
    for event_id, event_type, source, time in specs:
        event = Event(id=event_id, type=event_type, source=source, time=time, key="k", data={})
        assert event.headers() == {"ce_specversion": "1.0", "ce_id": event_id, "ce_type": event_type,
                                   "ce_source": source, "ce_time": time.isoformat(),
                                   "content-type": "application/json"}
        assert event.wire_headers() == [(k, v.encode()) for k, v in event.headers().items()]


def test_equal_instants_with_other_offsets_keep_their_own_time_text() -> None:
    utc = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    plus2 = utc.astimezone(timezone(timedelta(hours=2)))
    assert utc == plus2
    first = Event(id="1", type="t", source="s", time=utc, key="k").wire_headers()
    second = Event(id="2", type="t", source="s", time=plus2, key="k").wire_headers()
    assert dict(first)["ce_time"] == b"2026-12-06T10:00:00+00:00"
    assert dict(second)["ce_time"] == b"2026-12-06T12:00:00+02:00"
