"""Properties of the scoring fold: order, redelivery and merges never change the outcome."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from scoring.rules import RuleSet
from scoring.state import LeadScoreState, parse_time, same_value
from services.leads import score_breakdown
from tests.unit.scoring.support import SCORING, T0, histories, rules, touch

RULES = rules()
NOW = T0 + timedelta(days=10)
CAPS = {rule.name: rule.max_per_day for rule in SCORING.engagement}


def fold(touchpoints: list[dict[str, Any]], ruleset: RuleSet = RULES) -> LeadScoreState:
    state = LeadScoreState.empty()
    for tp in touchpoints:  # one at a time, as the consumer does for single deliveries
        state = ruleset.apply(state, tp)
    return state


@settings(max_examples=80, deadline=None)
@given(history=histories(), data=st.data())
def test_any_arrival_order_gives_the_same_state_and_score(history: list[dict[str, Any]],
                                                          data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(history))
    a, b = fold(history), fold(shuffled)
    assert a == b
    assert a.traits == b.traits
    assert RULES.score(a, NOW) == RULES.score(b, NOW)
    assert RULES.score(a, NOW).to_json() == RULES.score(b, NOW).to_json()
    assert RULES.apply_many(LeadScoreState.empty(), shuffled) == a  # the batch path folds the same


@settings(max_examples=50, deadline=None)
@given(history=histories(min_size=1), data=st.data())
def test_redelivery_is_a_no_op(history: list[dict[str, Any]], data: st.DataObject) -> None:
    again = data.draw(st.lists(st.sampled_from(history), max_size=10))
    once = fold(history)
    assert fold(history + again) == once
    assert fold([*again, *history]) == once  # a duplicate arriving before the rest changes nothing either
    assert RULES.apply(once, history[0]) is once


@settings(max_examples=60, deadline=None)
@given(history=histories(max_size=30), data=st.data())
def test_merge_is_commutative_and_equals_folding_the_union(history: list[dict[str, Any]],
                                                           data: st.DataObject) -> None:
    # Two leads that turn out to be one person; they may even share some (redelivered) touchpoints.
    side = data.draw(st.lists(st.sampled_from(["a", "b", "both"]), min_size=len(history),
                              max_size=len(history)))
    part_a = [tp for tp, s in zip(history, side, strict=True) if s in ("a", "both")]
    part_b = [tp for tp, s in zip(history, side, strict=True) if s in ("b", "both")]
    a, b = fold(part_a), fold(part_b)
    merged = RULES.merge(a, b)
    assert merged == RULES.merge(b, a)
    assert merged == fold(history)
    assert merged.traits == fold(history).traits
    assert RULES.score(merged, NOW) == RULES.score(fold(history), NOW)


@settings(max_examples=30, deadline=None)
@given(parts=st.lists(histories(max_size=8), min_size=3, max_size=3))
def test_merge_is_associative(parts: list[list[dict[str, Any]]]) -> None:
    # Ids must stay unique across the three leads: prefix them per part.
    renamed = [[{**tp, "event_id": f"{i}-{tp['event_id']}"} for tp in part] for i, part in enumerate(parts)]
    a, b, c = (fold(part) for part in renamed)
    assert RULES.merge(RULES.merge(a, b), c) == RULES.merge(a, RULES.merge(b, c))


@settings(max_examples=50, deadline=None)
@given(history=histories(max_size=40), data=st.data())
def test_caps_are_never_exceeded_and_keep_the_earliest(history: list[dict[str, Any]],
                                                       data: st.DataObject) -> None:
    state = fold(data.draw(st.permutations(history)))
    per_rule_day = Counter((item.rule, item.at.date()) for item in state.engagement_items if item.at)
    for (name, _day), count in per_rule_day.items():
        cap = CAPS[name]
        assert cap is None or count <= cap
    # The counted ones are exactly the earliest `cap` matches of that rule and day.
    for rule in RULES.engagement:
        if rule.max_per_day is None:
            continue
        matching = sorted(
            (parse_time(tp["occurred_at"]), tp["event_id"]) for tp in history if rule.matches(tp)
        )
        by_day: dict[Any, list[tuple[Any, str]]] = {}
        for at, event_id in matching:
            by_day.setdefault(at.date(), []).append((at, event_id))
        expected = {event_id for day in by_day.values() for _at, event_id in day[: rule.max_per_day]}
        counted = {item.event_id for item in state.engagement_items if item.rule == rule.name}
        assert counted == expected


@settings(max_examples=40, deadline=None)
@given(history=histories(max_size=15))
def test_state_survives_json(history: list[dict[str, Any]]) -> None:
    state = fold(history)
    stored = json.loads(json.dumps(state.to_json()))  # what the database column gives back
    assert LeadScoreState.from_json(stored) == state
    assert LeadScoreState.from_json(stored).traits == state.traits


@settings(max_examples=60, deadline=None)
@given(
    minutes=st.lists(st.integers(0, 200 * 24 * 60), min_size=1, max_size=10),
    later=st.integers(0, 400 * 24 * 60),
    step=st.integers(1, 100 * 24 * 60),
    half_life=st.floats(0.1, 365),
)
def test_decay_is_monotone_non_increasing_in_now(minutes: list[int], later: int, step: int,
                                                 half_life: float) -> None:
    # Positive rules only (demo-request earns 50; no cap), so decay can only lower the sum.
    history = [touch(f"d{i}", T0 + timedelta(minutes=m), "form_submit", properties={"form": "demo"})
               for i, m in enumerate(minutes)]
    state = fold(history)
    now1 = T0 + timedelta(minutes=later)
    now2 = now1 + timedelta(minutes=step)
    e1 = RULES.score(state, now1, half_life).engagement
    e2 = RULES.score(state, now2, half_life).engagement
    assert e2 <= e1 + 1e-9
    assert e1 <= 50 * len(minutes) + 1e-9


@settings(max_examples=60, deadline=None)
@given(points_at=st.integers(0, 10_000), half_life=st.floats(0.01, 1000), periods=st.integers(0, 5))
def test_decay_halves_exactly_every_half_life(points_at: int, half_life: float, periods: int) -> None:
    at = T0 + timedelta(minutes=points_at)
    state = fold([touch("d", at, "form_submit", properties={"form": "demo"})])
    now = at + timedelta(days=half_life * periods)
    engagement = RULES.score(state, now, half_life).engagement
    assert abs(engagement - 50 * 0.5**periods) < 1e-6


@settings(max_examples=30, deadline=None)
@given(history=histories(max_size=15), days=st.integers(-30, 3000))
def test_half_life_zero_means_no_decay(history: list[dict[str, Any]], days: int) -> None:
    state = fold(history)
    score = RULES.score(state, T0 + timedelta(days=days), 0)
    assert abs(score.engagement - sum(item.points for item in state.engagement_items)) < 1e-9
    assert abs(score.total - (score.fit + score.engagement)) < 1e-9


@settings(max_examples=60, deadline=None)
@given(history=histories(max_size=20), data=st.data())
def test_fit_kept_along_a_fold_is_the_fit_of_the_traits(history: list[dict[str, Any]], data: st.DataObject) -> None:
    # Fit items are handed from state to state while traits keep their values; whatever the order,
    # they are what matching the final traits gives, and so is the score of the state as stored.
    state = LeadScoreState.empty()
    for tp in data.draw(st.permutations(history)):
        state = RULES.apply(state, tp)
        assert RULES.state_fit_items(state) == RULES.fit_items(state.traits, state.traits_at)
    stored = LeadScoreState.from_json(json.loads(json.dumps(state.to_json())))
    assert RULES.score(state, NOW) == RULES.score(stored, NOW)


@settings(max_examples=60, deadline=None)
@given(value=st.sampled_from([1, 1.0, True, "1", None, 0, False, [1], [True], {"a": 1}, {"a": True}]),
       other=st.sampled_from([1, 1.0, True, "1", None, 0, False, [1], [True], {"a": 1}, {"a": True}]))
def test_a_trait_value_is_the_same_only_if_matchers_cannot_tell_them_apart(value: Any, other: Any) -> None:
    assert same_value(value, other) == (type(value) is type(other) and json.dumps(value) == json.dumps(other))


@settings(max_examples=80, deadline=None)
@given(history=histories(max_size=15), seconds=st.floats(-5 * 86400, 400 * 86400),
       half_life=st.sampled_from([0, 0.7, 30, 365]))
def test_the_lead_reader_rebuilds_the_breakdown_scoring_leaves_out(history: list[dict[str, Any]], seconds: float,
                                                                   half_life: float) -> None:
    # The consumer stores the fit lines only (Score.stored_json); GET /v1/leads rebuilds the engagement
    # lines from the stored state's items. Through JSON, as both travel, it must be the same breakdown.
    state = RULES.apply_many(LeadScoreState.empty(), history)
    now = T0 + timedelta(seconds=seconds)
    full = RULES.score(state, now, half_life)
    lean = RULES.score(state, now, half_life, engagement_lines=False)
    assert (lean.fit, lean.engagement, lean.total, lean.rules_hit) == (full.fit, full.engagement, full.total,
                                                                       full.rules_hit)
    stored = json.loads(json.dumps(lean.stored_json(TypeAdapter(datetime).dump_python(now, mode="json"))))
    stored_state = json.loads(json.dumps(state.to_json()))
    assert "breakdown" not in stored
    assert score_breakdown(stored, stored_state) == full.to_json()["breakdown"]
    assert {key: stored[key] for key in ("fit", "engagement", "total", "rules_hit")} == {
        key: full.to_json()[key] for key in ("fit", "engagement", "total", "rules_hit")}
