"""The response-time SLA as plain data: when a lead is due, when to remind, what to do on breach.

A lead assigned at ``assigned_at`` must be touched within ``sla.first_touch`` of the rep's business
time; reminders fire at fractions of that window, measured in business time too::

    plan = plan_sla(assigned_at, config.sla, rep)
    plan.due_at                     # add_business_time(assigned_at, sla.first_touch, rep)
    [r.at for r in plan.reminders]  # add_business_time(assigned_at, f * window, rep) for each f
    plan.timers()                   # what the timer worker stores: reminders first, then the breach
    breach_actions(config.sla)      # ["alert_rep", "alert_manager", "page_oncall", "reassign"]

Pure: the timer worker persists ``plan.timers()`` as rows and calls back into :mod:`notifier.alerts`
when each one comes due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from notifier.business_time import add_business_time, business_time_between
from services.config import Rep, Sla

TimerKind = Literal["sla_reminder", "sla_breach"]


@dataclass(frozen=True)
class Reminder:
    fraction: float  # of the window, 0 < fraction < 1
    at: datetime  # aware, UTC


@dataclass(frozen=True)
class Timer:
    """One scheduled SLA event: ``fraction`` is the reminder's, 1.0 for the breach itself."""

    kind: TimerKind
    at: datetime
    fraction: float


@dataclass(frozen=True)
class SlaPlan:
    assigned_at: datetime  # aware, UTC
    window: timedelta  # business time
    due_at: datetime  # aware, UTC
    reminders: tuple[Reminder, ...]  # in time order

    def timers(self) -> tuple[Timer, ...]:
        """Reminders in order, then the breach; all at or after ``assigned_at``."""
        return (
            *(Timer("sla_reminder", r.at, r.fraction) for r in self.reminders),
            Timer("sla_breach", self.due_at, 1.0),
        )


def plan_sla(assigned_at: datetime, sla: Sla, rep: Rep) -> SlaPlan:
    """Due time and reminder times for a lead assigned to ``rep`` at ``assigned_at`` (aware)."""
    window = sla.first_touch
    # Config validation sorts the fractions; dedupe here so two equal fractions remind once.
    fractions = sorted(set(sla.reminders))
    reminders = tuple(Reminder(f, add_business_time(assigned_at, window * f, rep)) for f in fractions)
    due_at = add_business_time(assigned_at, window, rep)
    return SlaPlan(assigned_at.astimezone(UTC), window, due_at, reminders)


def remaining(plan: SlaPlan, now: datetime, rep: Rep) -> timedelta:
    """Business time left before the breach; negative once overdue ("overdue by")."""
    return business_time_between(now, plan.due_at, rep)


def breach_actions(sla: Sla) -> list[str]:
    """The ``on_breach`` chain in the configured order, each action once.

    ``alert_rep`` and ``alert_manager`` become alerts (see :mod:`notifier.alerts`), ``page_oncall``
    a PagerDuty trigger, ``reassign`` a request to route the lead again without this rep.
    """
    seen: list[str] = []
    for action in sla.on_breach:
        if action not in seen:
            seen.append(action)
    return seen
