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
late displaces the latest counted one; traits are latest-wins by (occurred_at, event_id); a touchpoint
folded again finds its items and trait writes already there, a no-op. Each is a function of the set of
touchpoints, so folds and merges commute. No I/O and no clock reads here: ``now`` is always a parameter.
A state keeps its fit items (``state_fit_items``) and a fold that leaves the traits' values alone
hands them on, so a lead's fit rules are matched again only when its traits change.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from scoring.state import (
    SORT_KEY,
    Kind,
    LeadScoreState,
    ScoreItem,
    Stamp,
    email_domain,
    iso,
    newer,
    parse_time,
    plain_dict,
    same_value,
    stamp_isoformat,
    stamp_of,
)
from services.config import Scoring
from services.decay import decayed, per_second
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
    # ``when`` without its ``type`` entry: what is left to check once the type index picked the rule.
    matches_rest: Predicate | None = None


@dataclass(frozen=True)
class _FitRule:
    name: str
    matches: Predicate
    points: float
    trait_keys: tuple[str, ...]  # traits the rule reads: its breakdown line dates from their last write
    # The (effective) trait keys its ``when`` reads, when it reads nothing else and looks at plain
    # values only: whether it matches is then remembered per combination of their values.
    match_keys: tuple[str, ...] | None = None


class BreakdownLine(NamedTuple):
    """One explained contribution: ``points`` as configured, ``decayed_points`` as it counts at ``now``.
    (A named tuple: one is built per item on every score, and they are the cheapest immutable record.)"""

    rule: str
    kind: Kind
    points: float
    decayed_points: float
    event_id: str | None
    at: datetime | None
    at_text: str | None = None  # ``iso(at)`` when the caller has it already (formatting is slow)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "kind": self.kind,
            "points": round(self.points, 2),
            "decayed_points": round(self.decayed_points, 2),
            "event_id": self.event_id,
            "at": (self.at_text or iso(self.at)) if self.at else None,
        }


@dataclass(frozen=True)
class Score:
    """A lead's score at one instant. ``total = fit + engagement``; engagement decays, fit does not.
    ``breakdown`` holds the fit lines, then (unless it was left out) one line per engagement item."""

    fit: float
    engagement: float
    total: float
    breakdown: tuple[BreakdownLine, ...]
    rules_hit: frozenset[str]  # engagement rules counted at least once (for fast-track)
    at: datetime  # the instant engagement was decayed to
    half_life_days: float

    def to_json(self) -> dict[str, Any]:
        """The contract's lead ``score`` shape; numbers rounded to 2 decimals only here."""
        return {
            "fit": round(self.fit, 2),
            "engagement": round(self.engagement, 2),
            "total": round(self.total, 2),
            "breakdown": [line.to_json() for line in self.breakdown],
            "rules_hit": sorted(self.rules_hit),
        }

    def stored_json(self, at_text: str) -> dict[str, Any]:
        """What scoring stores in ``leads.score``: :meth:`to_json` without the engagement lines, which
        repeat the engagement items of the stored score state. The lead reader rebuilds them from those
        items, decayed to ``decayed_at`` (``at_text``: ``self.at`` as JSON text) by the same expression
        (``services.leads.score_breakdown``). A lead with hundreds of touchpoints is rescored on every
        batch it appears in: writing its whole breakdown each time was the largest part of the write."""
        return {
            "fit": round(self.fit, 2),
            "engagement": round(self.engagement, 2),
            "total": round(self.total, 2),
            "fit_breakdown": [line.to_json() for line in self.breakdown if line.kind == "fit"],
            "rules_hit": sorted(self.rules_hit),
            "decayed_at": at_text,
            "half_life_days": self.half_life_days,
        }


def decay_factor(at: datetime | None, now: datetime, half_life_days: float) -> float:
    """``0.5 ** (age_days / half_life)``; age is never negative, and half-life 0 means no decay."""
    age = (now - at).total_seconds() if at is not None else 0.0
    return decayed(1.0, age, per_second(half_life_days))


def _day_start(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


class _Builder:
    """Mutable working copy of a state: one copy in, many touchpoints folded, one frozen state out.
    The traits are copied on their first change only, and an unchanged lead keeps its fit items."""

    def __init__(self, rules: RuleSet, state: LeadScoreState) -> None:
        self.rules = rules
        self.base = state
        self.items = list(state.engagement_items)
        self.items_changed = False
        self.traits: dict[str, Any] | None = None  # None: still the base state's
        self.traits_at: dict[str, Stamp] | None = None
        self.values_changed = False  # a trait got another value (not only a later time)

    def freeze(self) -> LeadScoreState:
        base = self.base
        if self.traits is None or self.traits_at is None:
            return base.with_items(tuple(self.items)) if self.items_changed else base
        if self.values_changed:
            return LeadScoreState.of_owned(tuple(self.items), self.traits, self.traits_at)
        # Same values, later times: the effective traits and which fit rules match stay the same.
        state = LeadScoreState.of_owned(tuple(self.items), self.traits, self.traits_at, effective=base.traits)
        if "_fit_rules" in base.__dict__:
            state.__dict__["_fit_rules"] = base.__dict__["_fit_rules"]
        return state

    def add_touchpoint(self, touchpoint: Mapping[str, Any]) -> None:
        """Fold one touchpoint; folding it again changes nothing (each of its items and trait writes
        is already there), so a redelivery or an overlap of two merged histories is a no-op."""
        event_id = touchpoint.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise ValueError("a touchpoint needs a non-empty string event_id to be scored")
        raw_at = touchpoint.get("occurred_at")
        if raw_at is None:
            raise ValueError(f"touchpoint {event_id!r} has no occurred_at")
        at = parse_time(raw_at)
        at_stamp = stamp_of(raw_at, at)  # its texts cut from this one: formatting a datetime is slow
        at_text = None
        for rule in self.rules.candidates(touchpoint.get("type")):
            if (rule.matches_rest or rule.matches)(touchpoint):
                item = ScoreItem(rule.name, "engagement", rule.points, event_id, at)
                item.__dict__["_at_text"] = at_text = at_text or stamp_isoformat(at_stamp)
                self.add_item(item, rule.max_per_day)
        traits = _touchpoint_traits(touchpoint)
        if traits:
            stamp = (at_stamp, event_id)
            for key, value in traits.items():
                self.set_trait(key, value, stamp)

    def add_item(self, item: ScoreItem, cap: int | None) -> None:
        """Insert keeping canonical order; under a cap keep only the day's earliest ``cap`` items."""
        key = item.sort_key()
        pos = bisect_left(self.items, key, key=SORT_KEY)
        if pos < len(self.items) and self.items[pos].sort_key() == key:
            return  # the same touchpoint earned this rule already (merge of overlapping histories)
        if cap is not None:
            assert item.at is not None
            start = _day_start(item.at)
            lo = bisect_left(self.items, (start, "", ""), key=SORT_KEY)
            hi = bisect_left(self.items, (start + _DAY, "", ""), key=SORT_KEY, lo=lo)
            same_rule = [i for i in range(lo, hi) if self.items[i].rule == item.rule]
            if len(same_rule) >= cap:
                latest = same_rule[-1]
                if self.items[latest].sort_key() < key:
                    return  # the day's quota is filled by earlier touchpoints
                del self.items[latest]  # the late-arriving earlier touchpoint takes its place
        insort(self.items, item, key=SORT_KEY)
        self.items_changed = True

    def set_trait(self, key: str, value: Any, stamp: Stamp) -> None:
        if self.traits is None or self.traits_at is None:
            if not newer(stamp, value, self.base.traits_at.get(key), self.base.declared_traits.get(key)):
                return
            self.traits, self.traits_at = plain_dict(self.base.declared_traits), plain_dict(self.base.traits_at)
        elif not newer(stamp, value, self.traits_at.get(key), self.traits.get(key)):
            return
        if not self.values_changed and (key not in self.traits or not same_value(self.traits[key], value)):
            self.values_changed = True
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
        # (fit rule index, the values it reads) -> does it match; see _FitRule.match_keys.
        self._fit_memo: dict[tuple[Any, ...], bool] = {}

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
            # A plain string ``type`` is what the type index checks (case-insensitively, like the matcher).
            rest = _compile({k: v for k, v in rule.when.items() if k != "type"}, where) \
                if isinstance(pinned, str) else None
            engagement.append(_EngagementRule(rule.name, _compile(rule.when, where), rule.points,
                                              rule.max_per_day, pinned if isinstance(pinned, str) else None, rest))
        fit = []
        for i, fit_rule in enumerate(scoring.fit):
            where = f"scoring.fit.{i} ({fit_rule.name!r}).when"
            fit.append(_FitRule(fit_rule.name, _compile(fit_rule.when, where), fit_rule.points,
                                _trait_keys(fit_rule.when), _match_keys(fit_rule.when)))
        return cls(engagement, fit, scoring.decay_half_life_days)

    def apply(self, state: LeadScoreState, touchpoint: Mapping[str, Any]) -> LeadScoreState:
        """Fold one touchpoint (a ``Touchpoint.model_dump(mode="json")`` dict) into ``state``."""
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
            _fit_item(rule, traits_at or {})
            for rule in self.fit
            if rule.matches(data)
        )

    def state_fit_items(self, state: LeadScoreState) -> tuple[ScoreItem, ...]:
        """:meth:`fit_items` of the state's traits and their times, kept on the state. A fold that
        changes no trait hands the items on to the next state; one that only re-sends the same values
        (every e-mail touchpoint re-sets ``email_domain``) hands on which rules matched, and only the
        items' times are taken again."""
        cache = state.__dict__
        items: tuple[ScoreItem, ...]
        cached = cache.get("_fit")
        if cached is not None and cached[0] is self:
            return cached[1]  # type: ignore[no-any-return]
        matched = cache.get("_fit_rules")
        if matched is None or matched[0] is not self:
            matched = cache["_fit_rules"] = (self, self._matching_fit_rules(state.traits))
        items = tuple(_fit_item(rule, state.traits_at) for rule in matched[1])
        cache["_fit"] = (self, items)
        return items

    def _matching_fit_rules(self, traits: Mapping[str, Any]) -> tuple[_FitRule, ...]:
        data = {"traits": traits}
        memo = self._fit_memo
        if len(memo) > _FIT_MEMO_SIZE:
            memo.clear()
        out = []
        for index, rule in enumerate(self.fit):
            key = _values_key(index, rule.match_keys, traits)
            if key is None:
                hit = rule.matches(data)
            else:
                hit = memo.get(key)  # type: ignore[assignment]
                if hit is None:
                    hit = memo[key] = rule.matches(data)
            if hit:
                out.append(rule)
        return tuple(out)

    def score(self, state: LeadScoreState, now: datetime, half_life_days: float | None = None, *,
              engagement_lines: bool = True) -> Score:
        """The score at ``now``: engagement points decay by the half-life (the config's by default).
        ``engagement_lines=False`` leaves the engagement items' lines out of the breakdown (the
        consumer stores only the fit lines: :meth:`Score.stored_json`)."""
        half_life = self.half_life_days if half_life_days is None else half_life_days
        now = parse_time(now)
        lines: list[BreakdownLine] = []
        fit = 0.0
        for item in self.state_fit_items(state):
            fit += item.points
            lines.append(BreakdownLine(item.rule, "fit", item.points, item.points, None, item.at, item.iso_text))
        engagement = 0.0
        rate = per_second(half_life)
        for item in state.engagement_items:
            points = decayed(item.points, (now - item.at).total_seconds() if item.at is not None else 0.0, rate)
            engagement += points
            if engagement_lines:
                lines.append(BreakdownLine(item.rule, "engagement", item.points, points, item.event_id, item.at,
                                           item.iso_text))
        return Score(fit, engagement, fit + engagement, tuple(lines), state.rules_hit, now, half_life)


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


def _match_keys(when: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The trait keys a fit ``when`` reads if each of its paths is ``traits.<key>``; else None."""
    keys = []
    for path in when:
        head, _, key = str(path).partition(".")
        if head != "traits" or not key or "." in key:
            return None
        keys.append(key)
    return tuple(dict.fromkeys(keys))


_FIT_MEMO_SIZE = 50_000
_PLAIN = (str, int, float, bool, type(None))
_ABSENT = ("absent",)  # stands for a trait that is not there (unlike one that is null)


def _values_key(index: int, keys: tuple[str, ...] | None, traits: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """``(index, (type, value), ...)`` of the traits a fit rule reads; None if it cannot be remembered
    (the rule reads more than plain top-level traits, or a value is a list or an object)."""
    if keys is None:
        return None
    key: list[Any] = [index]
    for name in keys:
        if name not in traits:
            key.append(_ABSENT)
            continue
        value = traits[name]
        if type(value) not in _PLAIN:
            return None
        key.append((type(value), value))  # the type too: True == 1, but matchers tell them apart
    return tuple(key)


def _fit_item(rule: _FitRule, traits_at: Mapping[str, Stamp]) -> ScoreItem:
    """The fit item of a matching rule, dated by the last write of the traits it reads (a lead's fit
    items are made again on every batch that re-sends a trait, mostly with the times they had)."""
    if len(rule.trait_keys) == 1:  # most rules read one trait
        written = traits_at.get(rule.trait_keys[0])
        return _dated_fit_item(rule.name, rule.points, written[0] if written is not None else None)
    stamps = [traits_at[key][0] for key in rule.trait_keys if key in traits_at]
    return _dated_fit_item(rule.name, rule.points, max(stamps) if stamps else None)


@lru_cache(maxsize=8192)
def _dated_fit_item(rule: str, points: float, stamp: str | None) -> ScoreItem:
    """The fit item of ``rule`` dated by ``stamp``, its time's text already set. One object serves every
    lead and batch with that rule and stamp: an item is a value, and what it keeps (its texts, its JSON)
    follows from its fields alone."""
    if stamp is None:
        return ScoreItem(rule, "fit", points, None, None)
    at, text = _stamp_instant(stamp)
    item = ScoreItem(rule, "fit", points, None, at)
    item.__dict__["_at_text"] = text
    return item


@lru_cache(maxsize=4096)  # at 65,536 it would hold some 20 MiB when full, and fill for an hour at the soak's rate
def _stamp_instant(stamp: str) -> tuple[datetime, str]:
    """A stamp's instant and that instant's ISO text (a lead's fit lines are dated from the same few
    stamps batch after batch, so the stamps of the leads being scored now are the hits: as many as the
    state cache holds leads)."""
    return parse_time(stamp), stamp_isoformat(stamp)  # the text cut from the stamp: formatting is slow
