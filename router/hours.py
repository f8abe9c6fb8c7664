"""A rep's working hours and days, in the rep's own time zone, correct across DST. Pure.

::

    is_working(rep, datetime(2026, 3, 9, 14, 0, tzinfo=UTC))   # 09:00-17:00 America/New_York -> True
    next_start(rep, now)       # the first instant >= now when the rep is in hours (now if in hours), UTC
    describe_start(rep, start, now)   # "09:00 America/New_York", or "Mon 09:00 America/New_York"

Hours are a half-open wall-clock window ``[start, end)`` (``24:00`` = end of day) on the listed days.
The window is judged on the wall clock of the real instant, so on a DST change day the working time
simply grows or shrinks; when the start falls into a skipped hour (02:30 on a spring-forward night)
the rep starts at the jump, the first instant whose wall clock is past the start.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from services.config import WEEKDAYS, Rep

# Days are non-empty, so one week finds a working day; one more covers a start swallowed by a DST gap.
_HORIZON_DAYS = 15
# No zone changes its UTC offset twice within this span, so sampling at this step finds every change.
_SAMPLE_STEP = timedelta(hours=3)


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"{now.isoformat()} has no time zone; pass an aware datetime (e.g. tzinfo=UTC)")


def is_working(rep: Rep, now: datetime) -> bool:
    """True when ``now`` (aware) is on one of ``rep.days`` within ``rep.hours``, in ``rep.timezone``."""
    _require_aware(now)
    local = now.astimezone(ZoneInfo(rep.timezone))
    if WEEKDAYS[local.weekday()] not in rep.days:
        return False
    wall = local.time()  # naive wall-clock time
    return rep.hours.start <= wall and (rep.hours.end is None or wall < rep.hours.end)


def next_start(rep: Rep, now: datetime) -> datetime:
    """The first instant ``>= now`` at which :func:`is_working` holds, in UTC.

    UTC because arithmetic between two datetimes of one ``ZoneInfo`` is wall-clock arithmetic, wrong
    across a DST change; an instant in UTC subtracts and compares safely with any aware datetime.

    The rep's working time starts only where the wall clock reaches ``start`` (either pass of a
    repeated hour) or where the zone's offset changes (a jump over or back into the window), so the
    answer is the earliest of those candidates at which the rep works.
    """
    _require_aware(now)
    if is_working(rep, now):
        return now.astimezone(UTC)
    zone = ZoneInfo(rep.timezone)
    today = now.astimezone(zone).date()
    candidates = [
        _wall(today + timedelta(days=offset), rep, zone, fold)
        for offset in range(_HORIZON_DAYS)
        for fold in (0, 1)
    ]
    candidates += _offset_changes(zone, now, now + timedelta(days=_HORIZON_DAYS))
    found = [c for c in candidates if c > now and is_working(rep, c)]
    if not found:  # unreachable for a valid config (non-empty days, start < end); say what is wrong
        raise ValueError(f"rep {rep.id!r} never works within {_HORIZON_DAYS} days (hours {rep.hours}, "
                         f"days {rep.days}); check the rep's hours and days")
    return min(found)


def describe_start(rep: Rep, start: datetime, now: datetime) -> str:
    """``start`` on the rep's wall clock: ``09:00 America/New_York``, with the weekday when not today."""
    zone = ZoneInfo(rep.timezone)
    local, local_now = start.astimezone(zone), now.astimezone(zone)
    if local.date() == local_now.date():
        return f"{local:%H:%M} {rep.timezone}"
    if local.date() - local_now.date() < timedelta(days=7):
        return f"{local:%a %H:%M} {rep.timezone}"
    return f"{local:%Y-%m-%d %H:%M} {rep.timezone}"


def _wall(day: date, rep: Rep, zone: ZoneInfo, fold: int) -> datetime:
    """The instant the wall clock shows ``rep.hours.start`` on ``day`` (``fold`` picks a repeated hour)."""
    return datetime.combine(day, rep.hours.start, tzinfo=zone).replace(fold=fold).astimezone(UTC)


def _offset_changes(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Every instant in ``[start, end]`` at which ``zone``'s UTC offset changes (to the second)."""
    changes = []
    lo = start.astimezone(UTC)
    while lo < end:
        hi = min(lo + _SAMPLE_STEP, end.astimezone(UTC))
        if lo.astimezone(zone).utcoffset() != hi.astimezone(zone).utcoffset():
            changes.append(_bisect_change(zone, lo, hi))
        lo = hi
    return changes


def _bisect_change(zone: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """The first second in ``(lo, hi]`` with ``hi``'s offset (tz transitions are on whole seconds)."""
    target = hi.astimezone(zone).utcoffset()
    low, high = int(lo.timestamp()), int(hi.timestamp())  # low keeps lo's offset, high has the target
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == target:
            high = mid
        else:
            low = mid
    return datetime.fromtimestamp(high, UTC)
