"""A business-time clock: durations that only run inside a rep's working hours and days.

Working time is read in the rep's own time zone (``rep.timezone``, ``rep.hours``, ``rep.days``), so
a four-hour window that opens on Friday 16:00 for a Berlin rep working 09:00-17:00 Monday to Friday
closes on Monday 12:00 Berlin time::

    rep = Rep(id="anna", timezone="Europe/Berlin", hours="09:00-17:00", days=["mon", "tue", "wed", "thu", "fri"])
    start = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)                   # Friday 16:00 in Berlin
    add_business_time(start, timedelta(hours=4), rep)                   # Monday 11:00 UTC (12:00 Berlin)
    business_time_between(start, datetime(2026, 11, 23, 11, tzinfo=UTC), rep)  # 4:00:00

Every result is an aware datetime in UTC.

The definition, which also settles every daylight-saving question: an instant is business time when
the rep's wall clock, at that instant, shows one of ``rep.days`` and a time inside ``rep.hours``
(start inclusive, end exclusive; "24:00" is the end of the day). Business time is measured in real
elapsed time. So a rep working "00:00-24:00" on all seven days has business time equal to wall time
(the spring-forward day has 23 hours, the autumn day 25); working hours that begin inside the
skipped spring hour begin when the clock jumps; hours inside the repeated autumn hour count twice.

Pure: no clock reads, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from services.config import WEEKDAYS, Rep

_ZERO = timedelta(0)


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _as_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name} must be a timezone-aware datetime (got naive {value.isoformat()}); "
            "attach a zone, e.g. value.replace(tzinfo=UTC)"
        )
    return value.astimezone(UTC)


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    return instant.astimezone(zone).utcoffset() or _ZERO


def _candidates(wall: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The two UTC readings of naive local ``wall`` (equal unless it is in a gap or an overlap)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return min(first, second), max(first, second)


def _transition(lo: datetime, hi: datetime, zone: ZoneInfo) -> datetime:
    """The instant in (lo, hi] where the offset changes; zone transitions fall on whole seconds."""
    target = _offset(hi, zone)
    low, high = math.floor(lo.timestamp()), math.ceil(hi.timestamp())
    while high - low > 1:  # invariant: offset(low) != target, offset(high) == target
        middle = (low + high) // 2
        if _offset(datetime.fromtimestamp(middle, UTC), zone) == target:
            high = middle
        else:
            low = middle
    return max(datetime.fromtimestamp(high, UTC), lo)


@lru_cache(maxsize=8192)  # pure, and every timer of every lead asks about the same few days
def _day_intervals(
    day: date, hours_start: time, hours_end: time | None, zone: ZoneInfo
) -> tuple[tuple[datetime, datetime], ...]:
    """Instants whose wall-clock reading is inside the working hours of local ``day``, as intervals."""
    wall_start = datetime.combine(day, hours_start)
    wall_end = datetime.combine(day + timedelta(days=1), time(0)) if hours_end is None else (
        datetime.combine(day, hours_end)
    )
    lo, hi = _candidates(wall_start, zone)[0], _candidates(wall_end, zone)[1]
    # Pieces of constant UTC offset covering [lo, hi]; a day holds at most one transition.
    if _offset(lo, zone) == _offset(hi, zone):
        pieces = [(lo, hi)]
    else:
        switch = _transition(lo, hi, zone)
        pieces = [(lo, switch), (switch, hi)]
    intervals: list[tuple[datetime, datetime]] = []
    for piece_lo, piece_hi in pieces:
        offset = _offset(piece_lo, zone)
        # Within a piece the wall clock reads ``t + offset``: solve wall_start <= t + offset < wall_end.
        begin = max(piece_lo, (wall_start - offset).replace(tzinfo=UTC))
        end = min(piece_hi, (wall_end - offset).replace(tzinfo=UTC))
        if begin < end:
            intervals.append((begin, end))
    return tuple(intervals)


@lru_cache(maxsize=8192)
def _first_reading(day: date, zone: ZoneInfo) -> datetime:
    """The earliest instant whose wall-clock reading could be ``day`` 00:00 or later."""
    return _candidates(datetime.combine(day, time(0)), zone)[0]


def working_intervals(rep: Rep, first_day: date) -> Iterator[tuple[datetime, datetime]]:
    """The rep's working intervals in UTC for local dates from ``first_day`` on: ordered, disjoint, endless.

    Per-day sets are disjoint by definition (an instant has one wall-clock reading), but a clock that
    falls back across midnight can interleave two days, so intervals wait in ``pending`` until no
    later day can produce an earlier one.
    """
    zone = _zone(rep.timezone)
    workdays = {WEEKDAYS.index(day) for day in rep.days}
    pending: list[tuple[datetime, datetime]] = []
    day = first_day
    while True:
        if day.weekday() in workdays:
            pending.extend(_day_intervals(day, rep.hours.start, rep.hours.end, zone))
            pending.sort()
        day += timedelta(days=1)
        # Any interval of a later day starts at or after this bound (its earliest possible reading).
        bound = _first_reading(day, zone)
        while pending and pending[0][0] < bound:
            yield pending.pop(0)


def _local_day(instant: datetime, rep: Rep) -> date:
    return instant.astimezone(_zone(rep.timezone)).date()


def add_business_time(start: datetime, duration: timedelta, rep: Rep) -> datetime:
    """The instant at which ``duration`` of ``rep``'s business time has passed since ``start``.

    A zero duration returns ``start`` itself (in UTC). A window that is used up exactly at the end of
    a working interval ends there (Friday 16:00 + 1h with hours until 17:00 is Friday 17:00).
    Raises ``ValueError`` for a naive ``start`` or a negative ``duration``.
    """
    begin = _as_utc(start, "start")
    if duration < _ZERO:
        raise ValueError(f"duration must not be negative (got {duration}); business time only runs forward")
    if duration == _ZERO:
        return begin
    remaining = duration
    # Start a day early: an interval of the previous local day can reach past local midnight.
    for lo, hi in working_intervals(rep, _local_day(begin, rep) - timedelta(days=1)):
        if hi <= begin:
            continue
        lo = max(lo, begin)
        available = hi - lo
        if remaining <= available:
            return lo + remaining
        remaining -= available
    raise AssertionError("unreachable: working_intervals never ends")  # pragma: no cover


def business_time_between(start: datetime, end: datetime, rep: Rep) -> timedelta:
    """How much of ``rep``'s business time lies between ``start`` and ``end``.

    Negative when ``end`` comes before ``start`` (``between(a, b) == -between(b, a)``), which reads
    naturally as "overdue by" when ``start`` is a due time in the past.
    """
    lo_bound, hi_bound = _as_utc(start, "start"), _as_utc(end, "end")
    if hi_bound < lo_bound:
        return -business_time_between(end, start, rep)
    total = _ZERO
    for lo, hi in working_intervals(rep, _local_day(lo_bound, rep) - timedelta(days=1)):
        if lo >= hi_bound:
            break
        overlap = min(hi, hi_bound) - max(lo, lo_bound)
        if overlap > _ZERO:
            total += overlap
    return total


def is_business_time(instant: datetime, rep: Rep) -> bool:
    """Whether ``rep``'s wall clock at ``instant`` shows a working day and a time inside the hours."""
    wall = _as_utc(instant, "instant").astimezone(_zone(rep.timezone))
    if WEEKDAYS[wall.weekday()] not in rep.days:
        return False
    return rep.hours.start <= wall.time().replace(tzinfo=None) and (
        rep.hours.end is None or wall.time().replace(tzinfo=None) < rep.hours.end
    )
