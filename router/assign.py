"""Assignment: which rep takes this MQL, and why. Pure: live state and ``now`` come in as arguments.

Build a :class:`Router` once from the config (it compiles the territory matchers) and ask it for a
:class:`Decision` per lead; :func:`choose_rep` is the one-shot form::

    router = Router(config)
    decision = router.choose(lead, reps={"anna": RepState("anna", open_leads=25)},
                             routing=RoutingState({"emea": 0}), account_owner=None, now=now)
    decision.rep_id   # "ben"
    decision.reason   # "territory rule 1 (traits.country DE) -> team emea; round robin -> ben;
                      #  anna at capacity 25/25"
    decision.cursor   # 1: persist as the team's cursor (under the row lock you read it with)

Order of the policy:

1. Account-based routing (``routing.account_based``): the rep who already owns the lead's company
   domain gets it when eligible, whatever the hours (the caller passes ``None`` for free-mail domains).
2. Territory rules, first match wins (a rule without ``when`` matches every lead) -> a team.
3. Among the team's eligible reps (available in config and live state, open leads under capacity,
   not excluded), those in working hours; when nobody is in hours, those who start first.
4. The team's strategy picks one: ``round_robin`` (exact rotation in team order), ``weighted`` (smooth
   weighted round robin, nginx style, by ``rep.weight``), ``least_loaded`` (lowest open/capacity).

Nobody eligible -> ``rep_id=None``: the lead waits in the fallback queue, the reason says why.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from router.explain import describe_values, fmt_number
from router.hours import describe_start, is_working, next_start
from services.config import HandoffConfig, Rep, RoutingRule
from services.matchers import Predicate, compile_when


@dataclass(frozen=True)
class RepState:
    """A rep's live state from the database (``PUT /v1/reps/{id}`` and the open SQL count)."""

    rep_id: str
    open_leads: int  # open SQLs: the load that capacity limits
    available: bool = True  # False = out of office
    capacity: int | None = None  # overrides the config's capacity when set


@dataclass(frozen=True)
class RoutingState:
    """Per-team rotation cursors (JSON-able), as stored in the database."""

    team_cursors: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """Who takes the lead (``None``: fallback queue), from which team, why, and the team's new cursor."""

    rep_id: str | None
    team: str | None
    reason: str
    cursor: Any = None  # new cursor of ``team`` to persist; None = leave the stored cursor unchanged


class Router:
    """The routing policy of one config, territory matchers compiled once."""

    def __init__(self, config: HandoffConfig) -> None:
        self.config = config
        self._reps: dict[str, Rep] = {rep.id: rep for rep in config.reps}
        self._rules: list[tuple[int, RoutingRule, Predicate]] = [
            (i, rule, compile_when(rule.when, f"routing.rules.{i - 1}.when"))
            for i, rule in enumerate(config.routing.rules, start=1)
        ]

    def choose(self, lead: Mapping[str, Any], reps: Mapping[str, RepState], routing: RoutingState,
               account_owner: str | None, now: datetime, exclude: Collection[str] = ()) -> Decision:
        """Pick a rep for ``lead`` (``traits``, ``company_domain``, ...).

        ``reps`` holds the live state; a configured rep missing from it counts as available with no
        open leads. ``exclude`` lists reps that must not get the lead (a breached SLA); pass a mapping
        ``{rep_id: why}`` to have the why in the reason.
        """
        steps: list[str] = []
        if self.config.routing.account_based and account_owner:
            domain = lead.get("company_domain") or "of the lead"
            skip = self._skip_reason(account_owner, reps, exclude)
            if skip is None:
                return Decision(account_owner, self._team_of(account_owner, lead),
                                f"account {domain} owned by {account_owner} -> {account_owner}")
            steps.append(f"account {domain}: owner {skip}")

        matched = next(((i, rule) for i, rule, matches in self._rules if matches(lead)), None)
        if matched is None:
            steps.append("no routing rule matched; add a catch-all rule (one without when) to routing.rules")
            return Decision(None, None, "; ".join(steps))
        index, rule = matched
        team_name, team = rule.team, self.config.teams[rule.team]
        steps.append(f"territory rule {index} ({describe_values(rule.when, lead)}) -> team {team_name}")

        notes: dict[str, str] = {}
        eligible = []
        for rep_id in team.reps:
            skip = self._skip_reason(rep_id, reps, exclude)
            if skip is None:
                eligible.append(rep_id)
            else:
                notes[rep_id] = skip
        if not eligible:
            steps.append("nobody can take the lead (fallback queue): " + "; ".join(notes.values()))
            return Decision(None, team_name, "; ".join(steps))

        pool, hours_step, hours_notes = self._by_hours(eligible, now)
        if hours_step:
            steps.append(hours_step)
        notes.update(hours_notes)

        chosen, cursor, how = self._apply_strategy(team.strategy, team.reps, pool, reps,
                                                   routing.team_cursors.get(team_name))
        steps.append(how)
        steps += [notes[rep_id] for rep_id in team.reps if rep_id in notes]
        return Decision(chosen, team_name, "; ".join(steps), cursor)

    def _by_hours(self, eligible: list[str], now: datetime) -> tuple[list[str], str, dict[str, str]]:
        """The reps in hours (others noted with their start), else those who start first (and a step)."""
        notes: dict[str, str] = {}
        pool = [rep_id for rep_id in eligible if is_working(self._reps[rep_id], now)]
        if pool:
            for rep_id in eligible:
                if rep_id not in pool:
                    start = describe_start(self._reps[rep_id], next_start(self._reps[rep_id], now), now)
                    notes[rep_id] = f"{rep_id} outside hours (starts {start})"
            return pool, "", notes
        starts = {rep_id: next_start(self._reps[rep_id], now) for rep_id in eligible}
        first = min(starts.values())
        pool = [rep_id for rep_id in eligible if starts[rep_id] == first]
        for rep_id in eligible:
            if rep_id not in pool:
                later = describe_start(self._reps[rep_id], starts[rep_id], now)
                notes[rep_id] = f"{rep_id} starts later ({later})"
        verb = "starts" if len(pool) == 1 else "start"
        at = describe_start(self._reps[pool[0]], first, now)
        step = f"nobody in hours; {', '.join(pool)} {verb} first at {at}"
        return pool, step, notes

    def _apply_strategy(self, strategy: str, team_reps: Sequence[str], pool: Collection[str],
                        reps: Mapping[str, RepState], cursor: Any) -> tuple[str, Any, str]:
        if strategy == "round_robin":
            chosen, index = round_robin(team_reps, pool, cursor)
            return chosen, index, f"round robin -> {chosen}"
        if strategy == "weighted":
            weights = {rep_id: self._reps[rep_id].weight for rep_id in team_reps}
            chosen, current = smooth_weighted(team_reps, pool, weights, cursor)
            return chosen, current, f"weighted round robin -> {chosen} (weight {fmt_number(weights[chosen])})"
        loads = {rep_id: self._load(rep_id, reps) for rep_id in pool}
        chosen = least_loaded(team_reps, pool, loads)
        open_leads, capacity = loads[chosen]
        return chosen, None, f"least loaded -> {chosen} ({open_leads}/{capacity} open)"

    def _load(self, rep_id: str, reps: Mapping[str, RepState]) -> tuple[int, int]:
        state = reps.get(rep_id)
        if state is None:  # no live row yet: nothing open, the config's capacity
            return 0, self._reps[rep_id].capacity
        capacity = state.capacity if state.capacity is not None else self._reps[rep_id].capacity
        return state.open_leads, capacity

    def _skip_reason(self, rep_id: str, reps: Mapping[str, RepState], exclude: Collection[str]) -> str | None:
        """Why ``rep_id`` cannot take a lead now, or ``None`` when eligible (hours aside)."""
        rep = self._reps.get(rep_id)
        if rep is None:
            return f"{rep_id} is not a configured rep"
        if rep_id in exclude:
            why = exclude.get(rep_id) if isinstance(exclude, Mapping) else None
            return f"{rep_id} excluded ({why})" if why else f"{rep_id} excluded"
        state = reps.get(rep_id)
        if not rep.available:
            return f"{rep_id} unavailable (available: false in config)"
        if state is not None and not state.available:
            return f"{rep_id} out of office"
        open_leads, capacity = self._load(rep_id, reps)
        if open_leads >= capacity:
            return f"{rep_id} at capacity {open_leads}/{capacity}"
        return None

    def _team_of(self, rep_id: str, lead: Mapping[str, Any]) -> str | None:
        """The owner's team: the territory's team when the owner is in it, else the first listing them."""
        matched = next((rule.team for _, rule, matches in self._rules if matches(lead)), None)
        if matched is not None and rep_id in self.config.teams[matched].reps:
            return matched
        return next((name for name, team in self.config.teams.items() if rep_id in team.reps), None)


def choose_rep(lead: Mapping[str, Any], config: HandoffConfig, reps: Mapping[str, RepState],
               routing: RoutingState, account_owner: str | None, now: datetime,
               exclude: Collection[str] = ()) -> Decision:
    """One-shot :meth:`Router.choose`; build a :class:`Router` to route many leads."""
    return Router(config).choose(lead, reps, routing, account_owner, now, exclude)


def round_robin(team_reps: Sequence[str], pool: Collection[str], cursor: Any) -> tuple[str, int]:
    """The next rep of ``pool`` after index ``cursor`` in team order; returns it and its index.

    ``cursor`` is the index of the last chosen rep (``None`` or anything else: start at the first).
    """
    last = cursor if isinstance(cursor, int) and not isinstance(cursor, bool) else -1
    for step in range(1, len(team_reps) + 1):
        index = (last + step) % len(team_reps)
        if team_reps[index] in pool:
            return team_reps[index], index
    raise ValueError("round_robin needs at least one team rep in the pool")


def smooth_weighted(team_reps: Sequence[str], pool: Collection[str], weights: Mapping[str, float],
                    cursor: Any) -> tuple[str, dict[str, float]]:
    """Smooth weighted round robin (nginx): every pool rep gains its weight, the highest is chosen and
    pays the pool's total weight. Spreads picks evenly (weights 5,1,1 -> a a b a c a a), deterministic
    (ties go to team order). ``cursor`` is ``{rep_id: current weight}``; returns the chosen and the new one.
    """
    stored = cursor if isinstance(cursor, Mapping) else {}
    current = {rep_id: _as_float(stored.get(rep_id)) for rep_id in team_reps}
    total = 0.0
    best: str | None = None
    for rep_id in team_reps:
        if rep_id not in pool:
            continue
        current[rep_id] += weights[rep_id]
        total += weights[rep_id]
        if best is None or current[rep_id] > current[best]:
            best = rep_id
    if best is None:
        raise ValueError("smooth_weighted needs at least one team rep in the pool")
    current[best] -= total
    return best, current


def least_loaded(team_reps: Sequence[str], pool: Collection[str],
                 loads: Mapping[str, tuple[int, int]]) -> str:
    """The pool rep with the lowest open/capacity ratio; ties: fewer open leads, then team order.

    ``loads`` maps each pool rep to ``(open_leads, capacity)`` with ``capacity > 0``.
    """
    ranked = [(loads[r][0] / loads[r][1], loads[r][0], i, r) for i, r in enumerate(team_reps) if r in pool]
    if not ranked:
        raise ValueError("least_loaded needs at least one team rep in the pool")
    return min(ranked)[3]


def _as_float(value: Any) -> float:
    """A stored current weight; anything unusable (a cursor from another strategy) restarts at 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)
