"""LeadScoreState: JSON form, immutability, time parsing and the domain helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoring.state import (
    FREE_MAIL_DOMAINS,
    LeadScoreState,
    ScoreItem,
    company_domain,
    email_domain,
    host_of,
    parse_time,
    stamp_isoformat,
    stamp_of,
    stamp_time,
)
from tests.unit.scoring.support import T0, rules, touch

RULES = rules()


def sample_state() -> LeadScoreState:
    return RULES.apply_many(LeadScoreState.empty(), [
        touch("p", T0, properties={"path": "/pricing"}, traits={"title": "VP", "tags": ["a", 1]}),
        touch("u", T0 + timedelta(hours=1), "email_unsubscribe", email="jane@acme.com"),
    ])


def test_empty_state() -> None:
    empty = LeadScoreState.empty()
    assert empty == LeadScoreState()
    assert (empty.engagement_items, dict(empty.traits), dict(empty.traits_at)) == ((), {}, {})
    assert not empty.has_positive_engagement and empty.rules_hit == frozenset()


def test_json_round_trip_through_text() -> None:
    state = sample_state()
    text = json.dumps(state.to_json())
    back = LeadScoreState.from_json(text)
    assert back == state
    assert back.traits == state.traits
    assert back.engagement_items[0].at == T0
    assert LeadScoreState.from_json(back.to_json()).to_json() == state.to_json()


def test_json_shape_is_plain_and_sorted() -> None:
    body = sample_state().to_json()
    assert set(body) == {"version", "engagement_items", "traits", "traits_at"}  # no list of event ids
    assert body["traits"]["tags"] == ["a", 1]
    assert body["traits_at"]["title"] == ["2026-11-22T00:00:00.000000Z", "p"]
    assert {"rule", "points", "event_id", "at"} <= set(body["engagement_items"][0])


@pytest.mark.parametrize("bad", [[1], {"engagement_items": [{"rule": "x"}]}, {"version": 99},
                                 {"traits_at": {"title": ["not a time", "e"]}}])
def test_malformed_stored_state_is_a_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        LeadScoreState.from_json(bad)


def test_state_cannot_be_changed_in_place() -> None:
    state = sample_state()
    with pytest.raises(TypeError):
        state.traits["title"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        state.declared_traits["title"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        state.engagement_items = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        state.engagement_items[0].points = 99  # type: ignore[misc]


def test_score_items_compare_by_value() -> None:
    a = ScoreItem("r", "engagement", 1.0, "e", T0)
    assert a == ScoreItem("r", "engagement", 1.0, "e", T0)
    assert a != ScoreItem("r", "engagement", 2.0, "e", T0)
    assert a.at_text == "2026-11-22T00:00:00+00:00"


def test_parse_time_normalises_to_utc() -> None:
    assert parse_time("2026-11-22T01:00:00+01:00") == T0
    assert parse_time("2026-11-22T00:00:00Z").tzinfo == UTC
    assert parse_time(datetime(2026, 11, 22)) == T0  # naive means UTC
    assert parse_time(datetime(2026, 11, 21, 19, tzinfo=timezone(timedelta(hours=-5)))) == T0
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("22/11/2026")
    with pytest.raises(ValueError, match="not a time"):
        parse_time(12345)  # type: ignore[arg-type]


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))])),
       st.sampled_from(["auto", "seconds", "microseconds"]), st.booleans())
def test_a_stamp_cut_from_the_text_is_the_formatted_stamp(at: datetime, spec: str, with_z: bool) -> None:
    text = at.isoformat(timespec=spec)
    if with_z:
        text = text.replace("+00:00", "Z")
    assert stamp_of(text, parse_time(text)) == stamp_time(parse_time(text))
    utc = parse_time(text)
    assert stamp_isoformat(stamp_time(utc)) == utc.isoformat()  # what ScoreItem.at_text would format


@pytest.mark.parametrize("text", ["2026-11-22 10:00:00Z", "2026-11-22T10:00:00.5Z", "2026-11-22T12:00:00+02:00",
                                  "2026-11-22T10:00:00.123Z", "2026-11-22T10:00"])
def test_other_ways_of_writing_a_time_are_formatted(text: str) -> None:
    assert stamp_of(text, parse_time(text)) == stamp_time(parse_time(text))


def test_stamps_sort_like_the_instants_they_name() -> None:
    times = [T0, T0 + timedelta(microseconds=1), T0 + timedelta(seconds=1), T0 + timedelta(days=400)]
    assert sorted(stamp_time(t) for t in reversed(times)) == [stamp_time(t) for t in times]
    assert len({len(stamp_time(t)) for t in times}) == 1


@pytest.mark.parametrize(("email", "domain"), [(" Jane@Acme.COM ", "acme.com"), ("a@b@c.io", "c.io"),
                                                ("no-at-sign", None), ("@acme.com", None), ("x@", None),
                                                (None, None), (42, None)])
def test_email_domain(email: object, domain: str | None) -> None:
    assert email_domain(email) == domain


@pytest.mark.parametrize(("value", "host"), [("https://www.Acme.com/about", "acme.com"), ("acme.com", "acme.com"),
                                              ("  initech.io/path ", "initech.io"), ("", None), (None, None),
                                              ("http://", None), ("http://[bad", None)])
def test_host_of(value: object, host: str | None) -> None:
    assert host_of(value) == host


def test_company_domain_precedence() -> None:
    assert company_domain({"email_domain": "acme.com", "company_domain": "x.com"}) == "acme.com"
    assert company_domain({"email_domain": "gmail.com", "company_domain": "X.com", "website": "y.com"}) == "x.com"
    assert company_domain({"email_domain": "gmail.com", "website": "https://y.com"}) == "y.com"
    assert company_domain({"email_domain": "gmail.com"}) is None
    assert company_domain({}) is None
    assert {"gmail.com", "outlook.com", "gmx.de", "proton.me", "yandex.ru"} <= FREE_MAIL_DOMAINS
