"""Qualification: does this lead become an MQL (or get disqualified) now? Pure: no I/O, no clock.

Build a :class:`Qualifier` once from the config (it compiles the disqualify matchers) and call it
for every scored lead; :func:`qualify` is the one-shot form::

    qualifier = Qualifier(config.qualification)
    result = qualifier.qualify({"fit": 25, "engagement": 45, "traits": {...}}, "engaged", {"pricing-page"})
    result.stage   # "mql"
    result.reason  # "fit 25 >= 10 and engagement 45 >= 40"

Rules, in order:

1. A lead matching a ``disqualify`` block is disqualified from any stage before ``sql`` (a recycled
   lead too); a lead already ``sql`` or beyond belongs to a rep and is left alone (the reason says so).
2. Stages ``mql`` and beyond never change here: a lead whose score falls below the thresholds again
   (decay, an unsubscribe) is not un-qualified nor un-assigned.
3. A fast-track rule (``qualification.fast_track``) among the rules the lead hit, with fit met -> MQL.
4. fit >= ``fit_min`` and engagement >= ``engagement_min`` -> MQL. A ``recycled`` lead re-qualifies.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from router.explain import describe_when, fmt_number
from services import config as cfg
from services.matchers import Predicate, compile_when
from services.stages import STAGES

NURTURE_STAGES = frozenset({"anonymous", "known", "engaged", "recycled"})  # may become MQL
OWNED_STAGES = frozenset({"sql", "contacted", "opportunity", "won", "lost"})  # a rep has the lead


@dataclass(frozen=True)
class Qualification:
    """The outcome: ``stage`` to record (``"mql"``, ``"disqualified"``) or ``None`` for no change."""

    stage: str | None
    reason: str


class Qualifier:
    """The qualification policy of one config, matchers compiled once."""

    def __init__(self, config: cfg.Qualification) -> None:
        self.config = config
        self._disqualify: list[tuple[int, Mapping[str, Any], Predicate]] = [
            (i, when, compile_when(when, f"qualification.disqualify.{i - 1}"))
            for i, when in enumerate(config.disqualify, start=1)
        ]

    def qualify(self, lead: Mapping[str, Any], current_stage: str,
                rules_hit: Collection[str]) -> Qualification:
        """Decide for ``lead`` (``fit``, ``engagement``, ``traits``, ...) currently at ``current_stage``."""
        if current_stage not in STAGES:
            raise ValueError(f"unknown lead stage {current_stage!r}; expected one of {', '.join(STAGES)}")
        if current_stage == "disqualified":
            return Qualification(None, "already disqualified")

        hit = next(((i, when) for i, when, matches in self._disqualify if matches(lead)), None)
        if hit is not None:
            rule = f"disqualify rule {hit[0]} ({describe_when(hit[1])})"
            if current_stage in OWNED_STAGES:
                return Qualification(
                    None, f"matches {rule} but the lead is already {current_stage}; "
                    "a rep owns it, so it is not disqualified automatically")
            return Qualification("disqualified", rule)

        if current_stage not in NURTURE_STAGES:
            return Qualification(
                None, f"already {current_stage}; score changes do not re-qualify or un-qualify a lead")

        fit, engagement = _number(lead, "fit"), _number(lead, "engagement")
        thresholds = self.config.mql
        fit_met = fit >= thresholds.fit_min
        fit_text = f"fit {fmt_number(fit, thresholds.fit_min)} {'>=' if fit_met else '<'} " \
                   f"{fmt_number(thresholds.fit_min)}"
        prefix = "re-qualified from recycled: " if current_stage == "recycled" else ""

        fast = next((name for name in self.config.fast_track if name in rules_hit), None)
        if fast is not None and fit_met:
            return Qualification("mql", f"{prefix}fast-track rule {fast} ({fit_text})")

        engaged = engagement >= thresholds.engagement_min
        engagement_text = (f"engagement {fmt_number(engagement, thresholds.engagement_min)} "
                           f"{'>=' if engaged else '<'} {fmt_number(thresholds.engagement_min)}")
        if fit_met and engaged:
            return Qualification("mql", f"{prefix}{fit_text} and {engagement_text}")
        why = f"not qualified: {fit_text}; {engagement_text}"
        if fast is not None:
            why += f"; fast-track rule {fast} hit but fit is not met"
        return Qualification(None, why)


def qualify(lead: Mapping[str, Any], current_stage: str, rules_hit: Collection[str],
            config: cfg.Qualification) -> Qualification:
    """One-shot :meth:`Qualifier.qualify`; build a :class:`Qualifier` to decide many leads."""
    return Qualifier(config).qualify(lead, current_stage, rules_hit)


def _number(lead: Mapping[str, Any], key: str) -> float:
    value = lead.get(key)
    if value is None:
        return 0.0  # a lead nobody scored yet has no points
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"lead {key!r} must be a number, got {value!r}")
    return float(value)
