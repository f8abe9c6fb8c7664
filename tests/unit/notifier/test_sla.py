"""SLA plans: due time, reminders in business time, the breach chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.business_time import add_business_time, business_time_between
from notifier.sla import Reminder, Timer, breach_actions, plan_sla, remaining
from services.config import Rep, Sla

BERLIN = ZoneInfo("Europe/Berlin")
ANNA = Rep(id="anna", timezone="Europe/Berlin", hours="09:00-17:00", days=["mon", "tue", "wed", "thu", "fri"])


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)  # type: ignore[arg-type, misc]


def test_plan_for_a_friday_afternoon_assignment() -> None:
    sla = Sla(first_touch="4h", reminders=[0.5, 0.8])
    plan = plan_sla(berlin(2026, 11, 20, 16), sla, ANNA)
    assert plan.due_at == berlin(2026, 11, 23, 12)
    assert plan.reminders == (
        Reminder(0.5, berlin(2026, 11, 23, 10)),  # 1h Friday + 1h Monday
        Reminder(0.8, berlin(2026, 11, 23, 11, 12)),  # 3h12m of business time
    )
    assert plan.window == timedelta(hours=4)
    assert plan.timers() == (
        Timer("sla_reminder", berlin(2026, 11, 23, 10), 0.5),
        Timer("sla_reminder", berlin(2026, 11, 23, 11, 12), 0.8),
        Timer("sla_breach", berlin(2026, 11, 23, 12), 1.0),
    )
    assert all(t.at.tzinfo is UTC for t in plan.timers())


def test_short_windows_for_a_round_the_clock_rep_are_wall_time() -> None:
    always = Rep(id="carl", timezone="America/New_York")
    start = datetime(2026, 3, 8, 6, 59, 58, tzinfo=UTC)  # two seconds before the clock jumps
    plan = plan_sla(start, Sla(first_touch="4s", reminders=[0.25]), always)
    assert plan.due_at == start + timedelta(seconds=4)
    assert plan.reminders == (Reminder(0.25, start + timedelta(seconds=1)),)


def test_remaining_goes_negative_once_overdue() -> None:
    plan = plan_sla(berlin(2026, 11, 20, 16), Sla(first_touch="4h"), ANNA)
    assert remaining(plan, berlin(2026, 11, 20, 16), ANNA) == timedelta(hours=4)
    assert remaining(plan, berlin(2026, 11, 21, 12), ANNA) == timedelta(hours=3)  # Saturday: clock stopped
    assert remaining(plan, berlin(2026, 11, 23, 13), ANNA) == -timedelta(hours=1)


def test_duplicate_reminder_fractions_remind_once() -> None:
    plan = plan_sla(berlin(2026, 11, 20, 16), Sla(first_touch="4h", reminders=[0.5, 0.5]), ANNA)
    assert [r.fraction for r in plan.reminders] == [0.5]


def test_breach_chain_in_configured_order_each_once() -> None:
    sla = Sla(on_breach=["page_oncall", "alert_rep", "page_oncall", "reassign"])
    assert breach_actions(sla) == ["page_oncall", "alert_rep", "reassign"]
    assert breach_actions(Sla()) == ["alert_rep", "alert_manager"]
    assert breach_actions(Sla(on_breach=[])) == []


@settings(max_examples=150, deadline=None)
@given(
    st.datetimes(datetime(2025, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC)),
    st.integers(1, 3 * 24 * 3600),
    st.lists(st.floats(0.01, 0.99), max_size=4),
)
def test_plan_properties(assigned_at: datetime, seconds: int, fractions: list[float]) -> None:
    sla = Sla(first_touch=timedelta(seconds=seconds), reminders=fractions)
    plan = plan_sla(assigned_at, sla, ANNA)
    assert plan.due_at == add_business_time(assigned_at, sla.first_touch, ANNA)
    assert business_time_between(assigned_at, plan.due_at, ANNA) == sla.first_touch
    times = [t.at for t in plan.timers()]
    assert times == sorted(times)
    assert all(assigned_at <= t <= plan.due_at for t in times)
    for reminder in plan.reminders:
        assert reminder.at == add_business_time(assigned_at, reminder.fraction * sla.first_touch, ANNA)
