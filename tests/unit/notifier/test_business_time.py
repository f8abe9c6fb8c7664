"""The business-time clock: weekends, time zones, DST, and its algebra (hypothesis)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.business_time import add_business_time, business_time_between, is_business_time, working_intervals
from services.config import WEEKDAYS, Rep

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
WEEKDAYS_ONLY = ["mon", "tue", "wed", "thu", "fri"]
ZONES = [
    "UTC", "Europe/Berlin", "America/New_York", "Europe/London", "America/Los_Angeles", "Asia/Kolkata",
    "Australia/Lord_Howe",  # 30-minute DST shift
    "America/Sao_Paulo", "Pacific/Chatham", "Asia/Kathmandu", "America/Santiago", "Pacific/Apia",
]
# The DST transitions the brief names, as UTC instants.
DST_INSTANTS = [
    datetime(2026, 3, 8, 7, tzinfo=UTC),  # New York springs forward 02:00 EST -> 03:00 EDT
    datetime(2026, 11, 1, 6, tzinfo=UTC),  # New York falls back 02:00 EDT -> 01:00 EST
    datetime(2026, 3, 29, 1, tzinfo=UTC),  # Berlin springs forward 02:00 CET -> 03:00 CEST
    datetime(2026, 10, 25, 1, tzinfo=UTC),  # Berlin falls back 03:00 CEST -> 02:00 CET
]


def rep(zone: str = "UTC", hours: str = "00:00-24:00", days: Sequence[str] | None = None) -> Rep:
    return Rep.model_validate({"id": "r", "timezone": zone, "hours": hours, "days": list(days or WEEKDAYS)})


def at(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    """A wall-clock reading in ``zone`` as a UTC instant (aware datetimes in an ambiguous hour never
    compare equal across zones, PEP 495, so tests compare in UTC)."""
    return datetime(*args, tzinfo=zone, fold=fold).astimezone(UTC)  # type: ignore[arg-type, misc]


# --- examples ---------------------------------------------------------------------------------------

def test_friday_afternoon_window_rolls_over_the_weekend() -> None:
    anna = rep("Europe/Berlin", "09:00-17:00", WEEKDAYS_ONLY)
    due = add_business_time(at(BERLIN, 2026, 11, 20, 16), timedelta(hours=4), anna)  # Friday
    assert due == at(BERLIN, 2026, 11, 23, 12)  # Monday noon
    assert due.tzinfo is UTC


def test_window_used_up_exactly_at_closing_time_ends_there() -> None:
    anna = rep("Europe/Berlin", "09:00-17:00", WEEKDAYS_ONLY)
    assert add_business_time(at(BERLIN, 2026, 11, 20, 16), timedelta(hours=1), anna) == at(BERLIN, 2026, 11, 20, 17)


def test_start_outside_hours_waits_for_the_next_opening() -> None:
    anna = rep("Europe/Berlin", "09:00-17:00", WEEKDAYS_ONLY)
    saturday_night = at(BERLIN, 2026, 11, 21, 23)
    assert add_business_time(saturday_night, timedelta(minutes=30), anna) == at(BERLIN, 2026, 11, 23, 9, 30)
    assert business_time_between(saturday_night, at(BERLIN, 2026, 11, 23, 9), anna) == timedelta(0)


def test_same_instant_different_zones() -> None:
    start = datetime(2026, 11, 20, 15, tzinfo=UTC)  # Friday: 16:00 Berlin, 10:00 New York
    berlin = rep("Europe/Berlin", "09:00-17:00", WEEKDAYS_ONLY)
    new_york = rep("America/New_York", "09:00-17:00", WEEKDAYS_ONLY)
    assert add_business_time(start, timedelta(hours=4), berlin) == at(BERLIN, 2026, 11, 23, 12)
    assert add_business_time(start, timedelta(hours=4), new_york) == at(NEW_YORK, 2026, 11, 20, 14)


def test_zero_duration_and_negative_duration() -> None:
    anna = rep("Europe/Berlin", "09:00-17:00", WEEKDAYS_ONLY)
    start = at(BERLIN, 2026, 11, 21, 3)
    assert add_business_time(start, timedelta(0), anna) == start
    with pytest.raises(ValueError, match="must not be negative"):
        add_business_time(start, timedelta(seconds=-1), anna)


def test_naive_datetimes_are_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        add_business_time(datetime(2026, 1, 1), timedelta(hours=1), rep())
    with pytest.raises(ValueError, match="timezone-aware"):
        business_time_between(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2), rep())


def test_new_york_spring_forward_day_has_23_hours() -> None:
    carl = rep("America/New_York")
    assert business_time_between(at(NEW_YORK, 2026, 3, 8), at(NEW_YORK, 2026, 3, 9), carl) == timedelta(hours=23)
    # 22:00 EST Saturday + 4h of 24/7 time: the clock jumps at 02:00, so it reads 03:00 EDT.
    assert add_business_time(at(NEW_YORK, 2026, 3, 7, 22), timedelta(hours=4), carl) == at(NEW_YORK, 2026, 3, 8, 3)


def test_new_york_fall_back_day_has_25_hours() -> None:
    carl = rep("America/New_York")
    assert business_time_between(at(NEW_YORK, 2026, 11, 1), at(NEW_YORK, 2026, 11, 2), carl) == timedelta(hours=25)
    second_one_am = at(NEW_YORK, 2026, 11, 1, 1, fold=1)
    assert add_business_time(at(NEW_YORK, 2026, 11, 1), timedelta(hours=2), carl) == second_one_am


def test_berlin_office_hours_across_both_transitions() -> None:
    anna = rep("Europe/Berlin", "09:00-17:00", WEEKDAYS_ONLY)
    # Friday 15:00 before the spring change + 4h: 2h Friday, 2h Monday (the weekend's lost hour is irrelevant).
    assert add_business_time(at(BERLIN, 2026, 3, 27, 15), timedelta(hours=4), anna) == at(BERLIN, 2026, 3, 30, 11)
    assert add_business_time(at(BERLIN, 2026, 10, 23, 15), timedelta(hours=4), anna) == at(BERLIN, 2026, 10, 26, 11)
    week = business_time_between(at(BERLIN, 2026, 3, 23), at(BERLIN, 2026, 4, 6), anna)
    assert week == timedelta(hours=80)


def test_berlin_night_shift_inside_the_changed_hours() -> None:
    sunday_night = rep("Europe/Berlin", "01:00-05:00", ["sun"])
    # Spring: the clock skips 02:00-03:00, so the 01:00-05:00 shift lasts 3 hours.
    assert business_time_between(at(BERLIN, 2026, 3, 28), at(BERLIN, 2026, 3, 30), sunday_night) == timedelta(hours=3)
    # Autumn: 02:00-03:00 happens twice, so it lasts 5 hours.
    assert business_time_between(at(BERLIN, 2026, 10, 24), at(BERLIN, 2026, 10, 26), sunday_night) == timedelta(
        hours=5
    )
    # Hours beginning inside the skipped hour begin when the clock jumps (03:00 CEST).
    late = rep("Europe/Berlin", "02:30-05:00", ["sun"])
    assert add_business_time(at(BERLIN, 2026, 3, 29), timedelta(minutes=1), late) == at(BERLIN, 2026, 3, 29, 3, 1)
    # Hours ending inside the repeated hour count both passes through it.
    short = rep("Europe/Berlin", "01:00-02:30", ["sun"])
    assert business_time_between(at(BERLIN, 2026, 10, 24), at(BERLIN, 2026, 10, 26), short) == timedelta(hours=2)


def test_between_is_antisymmetric() -> None:
    anna = rep("Europe/Berlin", "09:00-17:00", WEEKDAYS_ONLY)
    a, b = at(BERLIN, 2026, 11, 20, 16), at(BERLIN, 2026, 11, 23, 10)
    assert business_time_between(a, b, anna) == timedelta(hours=2)
    assert business_time_between(b, a, anna) == -timedelta(hours=2)


def test_working_intervals_are_ordered_and_disjoint_across_midnight_fall_back() -> None:
    # Santiago falls back at 24:00 -> 23:00 (April): two local days interleave in UTC.
    night = rep("America/Santiago", "23:00-24:00")
    intervals = []
    for interval in working_intervals(night, date(2026, 4, 1)):
        intervals.append(interval)
        if len(intervals) == 12:
            break
    assert all(lo < hi for lo, hi in intervals)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(intervals))
    total = business_time_between(intervals[0][0], intervals[-1][1], night)
    assert total == sum((hi - lo for lo, hi in intervals), timedelta(0))


# --- properties ---------------------------------------------------------------------------------------

@st.composite
def reps(draw: st.DrawFn, min_span_minutes: int = 30, granularity: int = 1) -> Rep:
    zone = draw(st.sampled_from(ZONES))
    start = draw(st.integers(0, (24 * 60 - min_span_minutes) // granularity)) * granularity
    end = draw(st.integers(-(-(start + min_span_minutes) // granularity), 24 * 60 // granularity)) * granularity
    days = draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True))
    return rep(zone, f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}", days)


def near_dst() -> st.SearchStrategy[datetime]:
    around = st.builds(
        lambda base, shift: base + shift,
        st.sampled_from(DST_INSTANTS),
        st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=3)),
    )
    anywhere = st.datetimes(datetime(2025, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC))
    return st.one_of(around, anywhere)


durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=30))
always = rep("UTC")


@settings(max_examples=200, deadline=None)
@given(reps(), near_dst(), durations)
def test_add_then_measure_gives_the_duration_back(r: Rep, start: datetime, duration: timedelta) -> None:
    due = add_business_time(start, duration, r)
    assert due.tzinfo is UTC
    assert due >= start + duration  # business time never runs faster than wall time
    assert business_time_between(start, due, r) == duration
    if duration > timedelta(0):
        assert is_business_time(due - timedelta(microseconds=1), r)  # the window ends while working


@settings(max_examples=150, deadline=None)
@given(reps(), near_dst(), durations, durations)
def test_add_is_monotonic_in_the_duration(r: Rep, start: datetime, d1: timedelta, d2: timedelta) -> None:
    short, long = sorted((d1, d2))
    assert add_business_time(start, short, r) <= add_business_time(start, long, r)


@settings(max_examples=150, deadline=None)
@given(reps(), near_dst(), st.timedeltas(timedelta(0), timedelta(days=3)), durations)
def test_add_is_monotonic_in_the_start(r: Rep, start: datetime, later: timedelta, duration: timedelta) -> None:
    assert add_business_time(start, duration, r) <= add_business_time(start + later, duration, r)


spans = st.timedeltas(timedelta(0), timedelta(days=4))


@settings(max_examples=150, deadline=None)
@given(reps(), near_dst(), spans, spans)
def test_between_is_additive_and_bounded(r: Rep, a: datetime, ab: timedelta, bc: timedelta) -> None:
    b, c = a + ab, a + ab + bc
    assert business_time_between(a, b, r) + business_time_between(b, c, r) == business_time_between(a, c, r)
    assert timedelta(0) <= business_time_between(a, c, r) <= c - a
    assert business_time_between(c, a, r) == -business_time_between(a, c, r)


@settings(max_examples=150, deadline=None)
@given(reps(), near_dst(), st.timedeltas(timedelta(0), timedelta(days=4)))
def test_measure_then_add_lands_on_or_before_the_end(r: Rep, a: datetime, span: timedelta) -> None:
    b = a + span
    back = add_business_time(a, business_time_between(a, b, r), r)
    assert back <= b
    assert business_time_between(back, b, r) == timedelta(0)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ZONES), near_dst(), durations, st.timedeltas(timedelta(0), timedelta(days=4)))
def test_round_the_clock_rep_is_wall_time(zone: str, start: datetime, duration: timedelta, span: timedelta) -> None:
    r = rep(zone)
    assert add_business_time(start, duration, r) == start + duration
    assert business_time_between(start, start + span, r) == span
    assert is_business_time(start, r)


@settings(max_examples=200, deadline=None)
@given(reps(min_span_minutes=15, granularity=15), near_dst())
def test_between_matches_a_step_by_step_reading_of_the_wall_clock(r: Rep, around: datetime) -> None:
    """The definition, brute force: count the quarter hours whose wall-clock reading is inside the hours.

    Every zone offset and transition in ZONES falls on a quarter hour, so the count is exact.
    """
    start = around.replace(minute=around.minute // 15 * 15, second=0, microsecond=0) - timedelta(hours=30)
    zone = ZoneInfo(r.timezone)
    quarters = 0
    for step in range(60 * 4):  # 60 hours
        wall = (start + timedelta(minutes=15 * step)).astimezone(zone)
        clock = wall.time().replace(tzinfo=None)
        in_hours = r.hours.start <= clock and (r.hours.end is None or clock < r.hours.end)
        if WEEKDAYS[wall.weekday()] in r.days and in_hours:
            quarters += 1
    assert business_time_between(start, start + timedelta(hours=60), r) == timedelta(minutes=15 * quarters)


@settings(max_examples=200, deadline=None)
@given(reps(), near_dst())
def test_is_business_time_agrees_with_the_intervals(r: Rep, instant: datetime) -> None:
    inside = business_time_between(instant, instant + timedelta(microseconds=1), r) == timedelta(microseconds=1)
    assert is_business_time(instant, r) == inside


def test_wall_clock_reading_helper_uses_time_only() -> None:
    # Guard for the brute-force oracle above: a time with tzinfo must compare by its clock reading.
    assert time(9) <= datetime(2026, 1, 1, 9, tzinfo=BERLIN).time()
