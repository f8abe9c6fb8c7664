"""Working hours in the rep's time zone, across DST changes (New York, Berlin, Lord Howe)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.hours import describe_start, is_working, next_start
from services.config import WEEKDAYS, Rep

NY, BERLIN = ZoneInfo("America/New_York"), ZoneInfo("Europe/Berlin")
WEEKDAYS_ONLY = ["mon", "tue", "wed", "thu", "fri"]


def rep(timezone: str = "America/New_York", hours: str = "09:00-17:00", days: Any = WEEKDAYS_ONLY) -> Rep:
    return Rep(id="carl", timezone=timezone, hours=hours, days=days)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_hours_are_half_open_in_the_reps_zone() -> None:
    carl = rep()  # Wed 2026-03-11 is after the US change: New York = UTC-4
    assert not is_working(carl, utc(2026, 3, 11, 12, 59, 59))
    assert is_working(carl, utc(2026, 3, 11, 13, 0))
    assert is_working(carl, utc(2026, 3, 11, 20, 59, 59))
    assert not is_working(carl, utc(2026, 3, 11, 21, 0))


def test_days_are_judged_on_the_local_date() -> None:
    carl = rep(hours="00:00-24:00")
    # Sat 03:00 UTC is still Friday 22:00 in New York.
    assert is_working(carl, utc(2026, 3, 14, 1, 59))
    assert not is_working(carl, utc(2026, 3, 14, 5, 0))


def test_any_time_zone_of_now_gives_the_same_answer() -> None:
    instant = utc(2026, 3, 11, 13, 30)
    tokyo = instant.astimezone(ZoneInfo("Asia/Tokyo"))
    assert is_working(rep(), tokyo) and is_working(rep(), instant.astimezone(timezone(timedelta(hours=-7))))


@pytest.mark.parametrize(("instant", "working"), [
    # New York spring forward on Sun 2026-03-08: the same UTC time is 08:30 EST before, 09:30 EDT after.
    (utc(2026, 3, 6, 13, 30), False),
    (utc(2026, 3, 9, 13, 30), True),
    # New York fall back on Sun 2026-11-01: 09:30 EDT before, 08:30 EST after.
    (utc(2026, 10, 30, 13, 30), True),
    (utc(2026, 11, 2, 13, 30), False),
])
def test_new_york_dst_moves_hours_in_utc(instant: datetime, working: bool) -> None:
    assert is_working(rep(), instant) is working


@pytest.mark.parametrize(("instant", "working"), [
    # Berlin changes on Sun 2026-03-29 and Sun 2026-10-25 (UTC+1 <-> UTC+2).
    (utc(2026, 3, 27, 7, 30), False),  # 08:30 CET
    (utc(2026, 3, 30, 7, 30), True),  # 09:30 CEST
    (utc(2026, 10, 23, 15, 30), False),  # 17:30 CEST
    (utc(2026, 10, 26, 15, 30), True),  # 16:30 CET
])
def test_berlin_dst_moves_hours_in_utc(instant: datetime, working: bool) -> None:
    assert is_working(rep("Europe/Berlin"), instant) is working


def test_next_start_is_now_when_in_hours() -> None:
    now = utc(2026, 3, 11, 14, 0)
    assert next_start(rep(), now) == now
    assert next_start(rep(), now.astimezone(NY)) == now


def test_next_start_skips_the_weekend_across_the_spring_change() -> None:
    start = next_start(rep(), utc(2026, 3, 6, 22, 0))  # Fri 17:00 EST
    assert start == utc(2026, 3, 9, 13, 0)  # Mon 09:00 EDT, one hour earlier in UTC than the Friday before
    assert start.astimezone(NY).hour == 9


def test_next_start_answers_in_utc_whatever_the_callers_zone() -> None:
    # UTC because subtracting two datetimes of one ZoneInfo is wall-clock arithmetic, wrong across DST.
    start = next_start(rep(), datetime(2026, 3, 11, 3, 0, tzinfo=BERLIN))
    assert start.tzinfo is UTC and start == utc(2026, 3, 11, 13, 0)


def test_start_inside_the_skipped_hour_starts_at_the_jump() -> None:
    early = rep(hours="02:30-05:00", days=list(WEEKDAYS))
    # 2026-03-08 02:00 EST jumps to 03:00 EDT (07:00 UTC); 02:30 never shows on the clock that day.
    assert next_start(early, utc(2026, 3, 8, 5, 0)) == utc(2026, 3, 8, 7, 0)
    assert not is_working(early, utc(2026, 3, 8, 6, 59, 59)) and is_working(early, utc(2026, 3, 8, 7, 0))


def test_window_entirely_inside_the_skipped_hour_moves_to_the_next_day() -> None:
    night = rep("Europe/Berlin", hours="02:00-03:00", days=list(WEEKDAYS))
    # Berlin skips 02:00-03:00 on 2026-03-29: the next window is Monday 02:00 CEST.
    start = next_start(night, utc(2026, 3, 28, 23, 30))
    assert start == datetime(2026, 3, 30, 2, 0, tzinfo=BERLIN) == utc(2026, 3, 30, 0, 0)


def test_repeated_hour_is_worked_twice_in_the_fall() -> None:
    night = rep(hours="01:30-02:00", days=list(WEEKDAYS))
    # 2026-11-01: 01:00-02:00 EDT (05:00-06:00 UTC), then 01:00-02:00 EST again (06:00-07:00 UTC).
    assert is_working(night, utc(2026, 11, 1, 5, 45))
    assert not is_working(night, utc(2026, 11, 1, 6, 10))
    assert next_start(night, utc(2026, 11, 1, 6, 10)) == utc(2026, 11, 1, 6, 30)
    minutes = sum(is_working(night, utc(2026, 11, 1) + timedelta(minutes=m)) for m in range(24 * 60))
    assert minutes == 60


def test_fall_back_into_the_middle_of_the_window_starts_at_the_jump() -> None:
    # Lord Howe falls back half an hour on 2026-04-05: 02:00 (+11) becomes 01:30 (+10:30) at 15:00 UTC.
    zone = ZoneInfo("Australia/Lord_Howe")
    lh = rep("Australia/Lord_Howe", hours="01:00-01:45", days=list(WEEKDAYS))
    now = datetime(2026, 4, 5, 1, 50, tzinfo=zone)
    start = next_start(lh, now)
    assert start == utc(2026, 4, 4, 15, 0) and start.tzinfo is UTC
    assert start.astimezone(zone).strftime("%H:%M%z") == "01:30+1030"


def test_business_day_length_on_change_days() -> None:
    def worked(r: Rep, day: datetime) -> int:
        # Step in UTC: adding to a ZoneInfo datetime would step the wall clock and miss the change.
        first = day.astimezone(UTC)
        return sum(is_working(r, first + timedelta(minutes=m)) for m in range(0, 26 * 60))

    always = rep(hours="00:00-24:00", days=["sun"])
    assert worked(always, datetime(2026, 3, 8, tzinfo=NY)) == 23 * 60
    assert worked(always, datetime(2026, 11, 1, tzinfo=NY)) == 25 * 60
    assert worked(rep("Europe/Berlin", days=["sun"]), datetime(2026, 3, 29, tzinfo=BERLIN)) == 8 * 60


def test_naive_datetimes_are_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        is_working(rep(), datetime(2026, 3, 11, 12))
    with pytest.raises(ValueError, match="no time zone"):
        next_start(rep(), datetime(2026, 3, 11, 12))


def test_describe_start() -> None:
    now = utc(2026, 3, 11, 3, 0)  # Tue 23:00 in New York
    assert describe_start(rep(), next_start(rep(), now), now) == "Wed 09:00 America/New_York"
    later = utc(2026, 3, 11, 12, 0)
    assert describe_start(rep(), next_start(rep(), later), later) == "09:00 America/New_York"


# --- properties -------------------------------------------------------------------------------------

ZONES = ["UTC", "America/New_York", "Europe/Berlin", "America/Los_Angeles", "Australia/Lord_Howe",
         "Asia/Kathmandu", "Pacific/Auckland", "America/Sao_Paulo", "Asia/Kolkata"]
# Instants around every 2026 change of the zones above, plus ordinary days.
ANCHORS = [utc(2026, 3, 8, 7), utc(2026, 11, 1, 6), utc(2026, 3, 29, 1), utc(2026, 10, 25, 1),
           utc(2026, 4, 4, 15), utc(2026, 10, 3, 15, 30), utc(2026, 4, 4, 14), utc(2026, 9, 26, 14),
           utc(2026, 3, 8, 10), utc(2026, 3, 14, 10), utc(2026, 6, 17, 12), utc(2026, 1, 1)]
QUARTER = timedelta(minutes=15)


@st.composite
def reps(draw: st.DrawFn) -> Rep:
    start = draw(st.integers(0, 95))
    end = draw(st.integers(start + 1, 96))
    days = draw(st.sets(st.sampled_from(WEEKDAYS), min_size=1))

    def clock(quarter: int) -> str:
        return f"{quarter // 4:02d}:{quarter % 4 * 15:02d}"

    return Rep(id="r", timezone=draw(st.sampled_from(ZONES)), hours=f"{clock(start)}-{clock(end)}",
               days=sorted(days, key=WEEKDAYS.index))


instants = st.builds(lambda anchor, k: anchor + k * QUARTER, st.sampled_from(ANCHORS), st.integers(-4 * 96, 4 * 96))


@settings(max_examples=250, deadline=None)
@given(r=reps(), now=instants)
def test_next_start_is_the_first_working_quarter_hour(r: Rep, now: datetime) -> None:
    # Every boundary (start, end, midnight, offset change) of these zones lies on the UTC quarter-hour
    # grid, so stepping by quarter hours finds the exact answer.
    expected = now
    while not is_working(r, expected):
        expected += QUARTER
    assert next_start(r, now) == expected


@settings(max_examples=150, deadline=None)
@given(r=reps(), now=instants, jitter=st.integers(0, 899_999_999))
def test_next_start_is_working_and_nothing_before_it_is(r: Rep, now: datetime, jitter: int) -> None:
    now += timedelta(microseconds=jitter)
    start = next_start(r, now)
    assert start >= now and is_working(r, start)
    if start > now:
        assert not is_working(r, start - timedelta(seconds=1))
        assert not is_working(r, now + (start - now) / 2)


@settings(max_examples=100, deadline=None)
@given(zone=st.sampled_from(ZONES), now=instants)
def test_all_day_every_day_is_always_working(zone: str, now: datetime) -> None:
    r = rep(zone, "00:00-24:00", list(WEEKDAYS))
    assert is_working(r, now) and next_start(r, now) == now
