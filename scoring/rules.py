"""Scoring rules, compiled once from ``config.scoring`` and applied as a pure, order-free fold.

::

    rules = RuleSet.from_config(config.scoring)
    state = rules.apply(LeadScoreState.empty(), touchpoint.model_dump(mode="json"))
    state = rules.apply_many(state, more_touchpoints)            # one copy for a whole batch
    score = rules.score(state, now)                              # decay is evaluated at ``now``
    score.total, score.to_json()                                 # {"fit", "engagement", "total", ...}
    merged = rules.merge(state_of_lead_a, state_of_lead_b)       # identity merge, commutative

Why the result never depends on arrival order: a capped rule keeps, per UTC day, the *earliest*
``max_per_day`` matching touchpoints by (occurred_at, event_id), so an earlier touchpoint that arrives
late displaces the latest counted one; traits are latest-wins by (occurred_at, event_id); event ids
already folded in are a no-op. Each is a function of the set of touchpoints, so folds and merges commute.
No I/O and no clock reads here: ``now`` is always a parameter.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from scoring.state import (
    Kind,
    LeadScoreState,
    ScoreItem,
    Stamp,
    email_domain,
    iso,
    newer,
    parse_time,
    stamp_time,
)
from services.config import Scoring
from services.matchers import Predicate, compile_when

_DAY = timedelta(days=1)
# Trait keys the derived ``company_domain`` is computed from: a fit rule on it dates from their writes.
_COMPANY_DOMAIN_SOURCES = ("email_domain", "company_domain", "website")


@dataclass(frozen=True)
class _EngagementRule:
    name: str
    matches: Predicate
    points: float
    max_per_day: int | None
    type: Any = None  # the plain value ``when.type`` must equal (case-insensitively), if it is a string


@dataclass(frozen=True)
class _FitRule:
    name: str
    matches: Predicate
    points: float
    trait_keys: tuple[str, ...]  # traits the rule reads: its breakdown line dates from their last write


class BreakdownLine(NamedTuple):
    """One explained contribution: ``points`` as configured, ``decayed_points`` as it counts at ``now``.
    (A named tuple: one is built per item on every score, and they are the cheapest immutable record.)"""

    rule: str
    kind: Kind
    points: float
    decayed_points: float
    event_id: str | None
    at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "kind": self.kind,
            "points": round(self.points, 2),
            "decayed_points": round(self.decayed_points, 2),
            "event_id": self.event_id,
            "at": iso(self.at) if self.at else None,
        }


@dataclass(frozen=True)
class Score:
    """A lead's score at one instant. ``total = fit + engagement``; engagement decays, fit does not."""

    fit: float
    engagement: float
    total: float
    breakdown: tuple[BreakdownLine, ...]
    rules_hit: frozenset[str]  # engagement rules counted at least once (for fast-track)

    def to_json(self) -> dict[str, Any]:
        """The contract's lead ``score`` shape; numbers rounded to 2 decimals only here."""
        return {
            "fit": round(self.fit, 2),
            "engagement": round(self.engagement, 2),
            "total": round(self.total, 2),
            "breakdown": [line.to_json() for line in self.breakdown],
            "rules_hit": sorted(self.rules_hit),
        }


def decay_factor(at: datetime | None, now: datetime, half_life_days: float) -> float:
    """``0.5 ** (age_days / half_life)``; age is never negative, and half-life 0 means no decay."""
    if half_life_days <= 0 or at is None:
        return 1.0
    return float(0.5 ** (max(0.0, (now - at).total_seconds()) / (86400.0 * half_life_days)))


def _day_start(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


class _Builder:
    """Mutable working copy of a state: one copy in, many touchpoints folded, one frozen state out."""

    def __init__(self, rules: RuleSet, state: LeadScoreState) -> None:
        self.rules = rules
        self.items = list(state.engagement_items)
        self.traits = dict(state.declared_traits)
        self.traits_at = dict(state.traits_at)
        self.seen = set(state.seen_event_ids)

    def freeze(self) -> LeadScoreState:
        return LeadScoreState(tuple(self.items), self.traits, self.traits_at, frozenset(self.seen))

    def add_touchpoint(self, touchpoint: Mapping[str, Any]) -> None:
        event_id = touchpoint.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise ValueError("a touchpoint needs a non-empty string event_id to be scored")
        if event_id in self.seen:
            return  # redelivery: already folded in (or displaced by a cap, which is final too)
        raw_at = touchpoint.get("occurred_at")
        if raw_at is None:
            raise ValueError(f"touchpoint {event_id!r} has no occurred_at")
        at = parse_time(raw_at)
        self.seen.add(event_id)
        for rule in self.rules.candidates(touchpoint.get("type")):
            if rule.matches(touchpoint):
                self.add_item(ScoreItem(rule.name, "engagement", rule.points, event_id, at), rule.max_per_day)
        stamp = (stamp_time(at), event_id)
        for key, value in _touchpoint_traits(touchpoint).items():
            self.set_trait(key, value, stamp)

    def add_item(self, item: ScoreItem, cap: int | None) -> None:
        """Insert keeping canonical order; under a cap keep only the day's earliest ``cap`` items."""
        key = item.sort_key()
        pos = bisect_left(self.items, key, key=ScoreItem.sort_key)
        if pos < len(self.items) and ScoreItem.sort_key(self.items[pos]) == key:
            return  # the same touchpoint earned this rule already (merge of overlapping histories)
        if cap is not None:
            assert item.at is not None
            start = _day_start(item.at)
            lo = bisect_left(self.items, (start, "", ""), key=ScoreItem.sort_key)
            hi = bisect_left(self.items, (start + _DAY, "", ""), key=ScoreItem.sort_key, lo=lo)
            same_rule = [i for i in range(lo, hi) if self.items[i].rule == item.rule]
            if len(same_rule) >= cap:
                latest = same_rule[-1]
                if ScoreItem.sort_key(self.items[latest]) < key:
                    return  # the day's quota is filled by earlier touchpoints
                del self.items[latest]  # the late-arriving earlier touchpoint takes its place
        insort(self.items, item, key=ScoreItem.sort_key)

    def set_trait(self, key: str, value: Any, stamp: Stamp) -> None:
        if newer(stamp, value, self.traits_at.get(key), self.traits.get(key)):
            self.traits[key] = value
            self.traits_at[key] = stamp


def _touchpoint_traits(touchpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The trait writes one touchpoint makes: its traits plus ``email_domain`` from its email."""
    raw = touchpoint.get("traits")
    traits = {str(k): v for k, v in raw.items()} if isinstance(raw, Mapping) else {}
    domain = email_domain(touchpoint.get("email")) or email_domain(traits.get("email"))
    if domain:
        traits["email_domain"] = domain
    return traits


class RuleSet:
    """The compiled ``scoring`` config. Build with :meth:`from_config`; all methods are pure."""

    def __init__(self, engagement: Iterable[_EngagementRule], fit: Iterable[_FitRule],
                 half_life_days: float) -> None:
        self.engagement = tuple(engagement)
        self.fit = tuple(fit)
        self.half_life_days = half_life_days
        self._caps = {rule.name: rule.max_per_day for rule in self.engagement}
        # Most rules pin ``type`` to one value: index them by it so a touchpoint is only matched
        # against rules that can hold (matching is the bulk of a fold's cost).
        by_type: dict[str, list[_EngagementRule]] = {}
        any_type: list[_EngagementRule] = []
        for rule in self.engagement:
            if isinstance(rule.type, str):
                by_type.setdefault(rule.type.casefold(), []).append(rule)
            else:
                any_type.append(rule)
        self._by_type = {key: (*rules, *any_type) for key, rules in by_type.items()}
        self._any_type = tuple(any_type)

    def candidates(self, type_: Any) -> tuple[_EngagementRule, ...]:
        """The engagement rules a touchpoint of this ``type`` could match (a superset of the matches)."""
        if isinstance(type_, str):
            return self._by_type.get(type_.casefold(), self._any_type)
        return self._any_type

    @classmethod
    def from_config(cls, scoring: Scoring) -> RuleSet:
        """Compile every rule once; ``ValueError`` names the rule whose ``when`` cannot be compiled."""
        engagement = []
        for i, rule in enumerate(scoring.engagement):
            where = f"scoring.engagement.{i} ({rule.name!r}).when"
            pinned = rule.when.get("type")
            engagement.append(_EngagementRule(rule.name, _compile(rule.when, where), rule.points,
                                              rule.max_per_day, pinned if isinstance(pinned, str) else None))
        fit = []
        for i, fit_rule in enumerate(scoring.fit):
            where = f"scoring.fit.{i} ({fit_rule.name!r}).when"
            fit.append(_FitRule(fit_rule.name, _compile(fit_rule.when, where), fit_rule.points,
                                _trait_keys(fit_rule.when)))
        return cls(engagement, fit, scoring.decay_half_life_days)

    def apply(self, state: LeadScoreState, touchpoint: Mapping[str, Any]) -> LeadScoreState:
        """Fold one touchpoint (a ``Touchpoint.model_dump(mode="json")`` dict) into ``state``."""
        event_id = touchpoint.get("event_id")
        if isinstance(event_id, str) and event_id in state.seen_event_ids:
            return state  # cheap no-op for redeliveries, without copying anything
        return self.apply_many(state, (touchpoint,))

    def apply_many(self, state: LeadScoreState, touchpoints: Iterable[Mapping[str, Any]]) -> LeadScoreState:
        """Fold several touchpoints with one copy of the state (batches, ``handoff rescore``)."""
        builder = _Builder(self, state)
        for touchpoint in touchpoints:
            builder.add_touchpoint(touchpoint)
        return builder.freeze()

    def merge(self, a: LeadScoreState, b: LeadScoreState) -> LeadScoreState:
        """Identity merge: the state of the union of both histories (commutative, associative)."""
        if len(b.engagement_items) > len(a.engagement_items):
            a, b = b, a  # copy the larger one, insert the smaller one's items
        builder = _Builder(self, a)
        builder.seen |= b.seen_event_ids
        for item in b.engagement_items:
            builder.add_item(item, self._caps.get(item.rule))
        for key, stamp in b.traits_at.items():
            builder.set_trait(key, b.declared_traits.get(key), stamp)
        return builder.freeze()

    def fit_items(self, traits: Mapping[str, Any],
                  traits_at: Mapping[str, Stamp] | None = None) -> tuple[ScoreItem, ...]:
        """Fit rules matched against ``{"traits": traits}``; one item per matching rule, in config order.
        With ``traits_at`` each item is dated by the last write of the traits its rule reads."""
        data = {"traits": traits}
        return tuple(
            ScoreItem(rule.name, "fit", rule.points, None, _fit_time(rule, traits_at or {}))
            for rule in self.fit
            if rule.matches(data)
        )

    def score(self, state: LeadScoreState, now: datetime, half_life_days: float | None = None) -> Score:
        """The score at ``now``: engagement points decay by the half-life (the config's by default)."""
        half_life = self.half_life_days if half_life_days is None else half_life_days
        now = parse_time(now)
        lines: list[BreakdownLine] = []
        fit = 0.0
        for item in self.fit_items(state.traits, state.traits_at):
            fit += item.points
            lines.append(BreakdownLine(item.rule, "fit", item.points, item.points, None, item.at))
        engagement = 0.0
        # decay_factor inlined: this loop runs over every item on every score.
        per_second = 1.0 / (86400.0 * half_life) if half_life > 0 else 0.0
        for item in state.engagement_items:
            age = (now - item.at).total_seconds() if item.at is not None and per_second else 0.0
            decayed = item.points * 0.5 ** (age * per_second) if age > 0 else item.points
            engagement += decayed
            lines.append(BreakdownLine(item.rule, "engagement", item.points, decayed, item.event_id, item.at))
        return Score(fit, engagement, fit + engagement, tuple(lines), state.rules_hit)


def _compile(when: Mapping[str, Any], where: str) -> Predicate:
    try:
        return compile_when(when, where)
    except ValueError as exc:
        raise ValueError(f"bad scoring rule: {exc}") from None


def _trait_keys(when: Mapping[str, Any]) -> tuple[str, ...]:
    keys: list[str] = []
    for path in when:
        head, _, rest = str(path).partition(".")
        if head == "traits" and rest:
            key = rest.split(".", 1)[0]
            keys += _COMPANY_DOMAIN_SOURCES if key == "company_domain" else [key]
    return tuple(dict.fromkeys(keys))


def _fit_time(rule: _FitRule, traits_at: Mapping[str, Stamp]) -> datetime | None:
    stamps = [traits_at[key][0] for key in rule.trait_keys if key in traits_at]
    return parse_time(max(stamps)) if stamps else None
