"""Assignment: account ownership, territories, strategies, fairness, capacity, availability, hours."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.assign import (
    Decision,
    RepState,
    Router,
    RoutingState,
    choose_rep,
    least_loaded,
    round_robin,
    smooth_weighted,
)
from router.hours import is_working
from services.config import HandoffConfig, parse_config

# Wed 2026-03-11 14:00 UTC: 10:00 in New York (EDT), 15:00 in Berlin (CET), 07:00 in Los Angeles (PDT).
NOW = datetime(2026, 3, 11, 14, 0, tzinfo=UTC)
ALL_DAY = {"hours": "00:00-24:00", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
OFFICE = {"hours": "09:00-17:00", "days": ["mon", "tue", "wed", "thu", "fri"]}


def make_config(teams: dict[str, Any], reps: list[dict[str, Any]] | None = None,
                rules: list[dict[str, Any]] | None = None, account_based: bool = True) -> HandoffConfig:
    names = sorted({rep for team in teams.values() for rep in team["reps"]})
    reps = reps if reps is not None else [{"id": name, **ALL_DAY} for name in names]
    rules = rules if rules is not None else [{"team": next(iter(teams))}]
    return parse_config({"teams": teams, "reps": reps,
                         "routing": {"account_based": account_based, "rules": rules}})


def lead(country: str = "DE", domain: str = "acme.com") -> dict[str, Any]:
    return {"fit": 25, "engagement": 45, "company_domain": domain, "email": f"jane@{domain}",
            "traits": {"country": country, "email_domain": domain}}


def state(**open_leads: int) -> dict[str, RepState]:
    return {rep_id: RepState(rep_id, n) for rep_id, n in open_leads.items()}


EXAMPLE = make_config(
    teams={"emea": {"strategy": "round_robin", "reps": ["anna", "ben"]},
           "default": {"strategy": "least_loaded", "reps": ["carl", "dana"]}},
    reps=[{"id": "anna", "timezone": "Europe/Berlin", **OFFICE},
          {"id": "ben", "timezone": "Europe/London", **OFFICE},
          {"id": "carl", "timezone": "America/New_York", **OFFICE},
          {"id": "dana", "timezone": "America/Los_Angeles", **OFFICE}],
    rules=[{"when": {"traits.country": {"in": ["DE", "FR", "GB"]}}, "team": "emea"}, {"team": "default"}],
)


# --- territory and reasons ----------------------------------------------------------------------------

def test_the_issue_example_reason() -> None:
    decision = choose_rep(lead("DE"), EXAMPLE, {"anna": RepState("anna", 25), "ben": RepState("ben", 3)},
                          RoutingState({}), None, NOW)
    assert decision == Decision(
        "ben", "emea", "territory rule 1 (traits.country DE) -> team emea; round robin -> ben; "
        "anna at capacity 25/25", 1)


def test_territory_first_match_wins() -> None:
    config = make_config(
        teams={"dach": {"reps": ["anna"]}, "emea": {"reps": ["ben"]}, "rest": {"reps": ["carl"]}},
        rules=[{"when": {"traits.country": {"in": ["DE", "AT", "CH"]}}, "team": "dach"},
               {"when": {"traits.country": {"in": ["DE", "FR"]}}, "team": "emea"},
               {"team": "rest"}])
    router = Router(config)
    assert router.choose(lead("DE"), {}, RoutingState(), None, NOW).team == "dach"
    assert router.choose(lead("FR"), {}, RoutingState(), None, NOW).team == "emea"
    us = router.choose(lead("US"), {}, RoutingState(), None, NOW)
    assert (us.rep_id, us.team) == ("carl", "rest")
    assert us.reason.startswith("territory rule 3 (catch-all) -> team rest")


def test_territory_matches_are_case_insensitive_and_missing_traits_fall_through() -> None:
    decision = choose_rep({"traits": {"country": "de"}}, EXAMPLE, {}, RoutingState(), None, NOW)
    assert decision.team == "emea"
    decision = choose_rep({"traits": {}}, EXAMPLE, {}, RoutingState(), None, NOW)
    assert decision.team == "default"


def test_no_matching_rule_goes_to_the_fallback_queue_with_a_hint() -> None:
    config = make_config({"emea": {"reps": ["anna"]}},
                         rules=[{"when": {"traits.country": "DE"}, "team": "emea"}])
    decision = choose_rep(lead("US"), config, {}, RoutingState(), None, NOW)
    assert decision.rep_id is None and decision.team is None
    assert "no routing rule matched" in decision.reason and "catch-all" in decision.reason


# --- account-based routing ------------------------------------------------------------------------------

def test_account_owner_gets_the_lead_whatever_the_territory_and_hours() -> None:
    late = datetime(2026, 3, 11, 23, 0, tzinfo=UTC)  # carl (New York) is in hours, anna (Berlin) is not
    decision = choose_rep(lead("DE"), EXAMPLE, {}, RoutingState({"emea": 0}), "dana", late)
    assert decision == Decision("dana", "default", "account acme.com owned by dana -> dana", None)


def test_account_owner_in_the_territory_team_keeps_that_team() -> None:
    config = make_config({"emea": {"reps": ["anna", "ben"]}, "other": {"reps": ["ben"]}})
    assert choose_rep(lead(), config, {}, RoutingState(), "ben", NOW).team == "emea"


@pytest.mark.parametrize(("reps", "exclude", "why"), [
    ({"dana": RepState("dana", 25)}, (), "account acme.com: owner dana at capacity 25/25"),
    ({"dana": RepState("dana", 0, available=False)}, (), "account acme.com: owner dana out of office"),
    ({}, {"dana": "SLA breach"}, "account acme.com: owner dana excluded (SLA breach)"),
])
def test_an_ineligible_account_owner_falls_back_to_territory(reps: dict[str, RepState], exclude: Any,
                                                            why: str) -> None:
    decision = choose_rep(lead("DE"), EXAMPLE, reps, RoutingState(), "dana", NOW, exclude)
    assert decision.rep_id == "anna" and decision.team == "emea"
    assert decision.reason.startswith(why + "; territory rule 1")


def test_unknown_owner_and_disabled_account_routing() -> None:
    decision = choose_rep(lead("DE"), EXAMPLE, {}, RoutingState(), "zoe", NOW)
    assert decision.rep_id == "anna" and "owner zoe is not a configured rep" in decision.reason
    off = EXAMPLE.model_copy(update={"routing": EXAMPLE.routing.model_copy(update={"account_based": False})})
    decision = choose_rep(lead("DE"), off, {}, RoutingState(), "dana", NOW)
    assert decision.rep_id == "anna" and "account" not in decision.reason


# --- eligibility --------------------------------------------------------------------------------------------

TEAM4 = make_config({"t": {"strategy": "round_robin", "reps": ["anna", "ben", "carl", "dana"]}})


def test_capacity_override_and_config_capacity() -> None:
    reps = {"anna": RepState("anna", 25), "ben": RepState("ben", 5, capacity=5),
            "carl": RepState("carl", 5, capacity=6)}
    decision = choose_rep(lead(), TEAM4, reps, RoutingState(), None, NOW)
    assert decision.rep_id == "carl"
    assert decision.reason.endswith("round robin -> carl; anna at capacity 25/25; ben at capacity 5/5")


def test_capacity_override_can_raise_the_limit() -> None:
    reps = {"anna": RepState("anna", 25, capacity=30)}
    assert choose_rep(lead(), TEAM4, reps, RoutingState(), None, NOW).rep_id == "anna"


def test_out_of_office_and_config_unavailable() -> None:
    config = make_config({"t": {"reps": ["anna", "ben", "carl"]}},
                         reps=[{"id": "anna", "available": False}, {"id": "ben"}, {"id": "carl"}])
    decision = choose_rep(lead(), config, {"ben": RepState("ben", 0, available=False)}, RoutingState(),
                          None, NOW)
    assert decision.rep_id == "carl"
    assert "anna unavailable (available: false in config)" in decision.reason
    assert "ben out of office" in decision.reason


def test_exclude_list_and_mapping() -> None:
    decision = choose_rep(lead(), TEAM4, {}, RoutingState(), None, NOW, exclude=["anna"])
    assert decision.rep_id == "ben" and decision.reason.endswith("anna excluded")
    decision = choose_rep(lead(), TEAM4, {}, RoutingState({"t": 0}), None, NOW,
                          exclude={"ben": "SLA breach", "carl": ""})
    assert decision.rep_id == "dana"
    assert decision.reason.endswith("ben excluded (SLA breach); carl excluded")


def test_nobody_eligible_goes_to_the_fallback_queue_explaining_each_rep() -> None:
    reps = {"anna": RepState("anna", 25), "ben": RepState("ben", 0, available=False)}
    decision = choose_rep(lead("DE"), EXAMPLE, reps, RoutingState({"emea": 1}), None, NOW)
    assert decision == Decision(
        None, "emea", "territory rule 1 (traits.country DE) -> team emea; nobody can take the lead "
        "(fallback queue): anna at capacity 25/25; ben out of office", None)


def test_zero_capacity_rep_never_gets_a_lead() -> None:
    config = make_config({"t": {"reps": ["anna"]}}, reps=[{"id": "anna", "capacity": 0}])
    decision = choose_rep(lead(), config, {}, RoutingState(), None, NOW)
    assert decision.rep_id is None and "anna at capacity 0/0" in decision.reason


# --- strategies ---------------------------------------------------------------------------------------------

def test_round_robin_rotates_in_team_order_and_wraps() -> None:
    router = Router(TEAM4)
    cursor: Any = None
    chosen = []
    for _ in range(6):
        decision = router.choose(lead(), {}, RoutingState({"t": cursor}), None, NOW)
        chosen.append(decision.rep_id)
        cursor = decision.cursor
    assert chosen == ["anna", "ben", "carl", "dana", "anna", "ben"]


def test_round_robin_skips_ineligible_and_moves_the_cursor_to_the_chosen() -> None:
    assert round_robin(["a", "b", "c", "d"], {"a", "d"}, 0) == ("d", 3)
    assert round_robin(["a", "b", "c", "d"], {"a", "b"}, 3) == ("a", 0)
    assert round_robin(["a", "b"], {"a", "b"}, 7) == ("a", 0)  # a cursor from a bigger team wraps
    assert round_robin(["a", "b"], {"b"}, {"a": 1.0}) == ("b", 1)  # a foreign cursor restarts
    with pytest.raises(ValueError):
        round_robin(["a"], set(), None)


@pytest.mark.parametrize("size", [2, 3, 4, 7])
def test_round_robin_is_exactly_fair_over_10000_assignments(size: int) -> None:
    names = [f"rep{i}" for i in range(size)]
    router = Router(make_config({"t": {"strategy": "round_robin", "reps": names}}))
    counts: Counter[str] = Counter()
    cursor: Any = None
    for _ in range(10_000):
        decision = router.choose(lead(), {}, RoutingState({"t": cursor}), None, NOW)
        assert decision.rep_id is not None
        counts[decision.rep_id] += 1
        cursor = json.loads(json.dumps(decision.cursor))  # as the database stores it
    assert max(counts.values()) - min(counts.values()) <= 1
    assert sorted(counts.values(), reverse=True) == [
        10_000 // size + (1 if i < 10_000 % size else 0) for i in range(size)]


def test_smooth_weighted_matches_nginx_sequence() -> None:
    cursor: Any = None
    picks = []
    for _ in range(7):
        chosen, cursor = smooth_weighted(["a", "b", "c"], {"a", "b", "c"}, {"a": 5, "b": 1, "c": 1}, cursor)
        picks.append(chosen)
    assert picks == ["a", "a", "b", "a", "c", "a", "a"]
    assert cursor == {"a": 0, "b": 0, "c": 0}  # one full period brings the state back


@pytest.mark.parametrize("weights", [[1, 2, 3.5], [1, 1, 1, 5], [0.3, 0.7], [10, 1, 2, 3, 4]])
def test_weighted_is_within_2_percent_over_10000_assignments(weights: list[float]) -> None:
    names = [f"rep{i}" for i in range(len(weights))]
    config = make_config({"t": {"strategy": "weighted", "reps": names}},
                         reps=[{"id": n, "weight": w, **ALL_DAY} for n, w in zip(names, weights, strict=True)])
    router = Router(config)
    counts: Counter[str] = Counter()
    cursor: Any = None
    for _ in range(10_000):
        decision = router.choose(lead(), {}, RoutingState({"t": cursor}), None, NOW)
        assert decision.rep_id is not None and "weighted round robin" in decision.reason
        counts[decision.rep_id] += 1
        cursor = json.loads(json.dumps(decision.cursor))
    for name, weight in zip(names, weights, strict=True):
        expected = 10_000 * weight / sum(weights)
        assert abs(counts[name] - expected) <= 0.02 * expected, (name, counts[name], expected)


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.integers(1, 10), min_size=1, max_size=6), periods=st.integers(1, 5))
def test_smooth_weighted_is_exact_over_each_period(weights: list[int], periods: int) -> None:
    names = [f"r{i}" for i in range(len(weights))]
    weight_of = dict(zip(names, weights, strict=True))
    cursor: Any = None
    counts: Counter[str] = Counter()
    for step in range(1, periods * sum(weights) + 1):
        chosen, cursor = smooth_weighted(names, set(names), weight_of, cursor)
        counts[chosen] += 1
        # Smooth: never ahead of its share by a whole pick, never behind by more than the team size.
        for name in names:
            share = step * weight_of[name] / sum(weights)
            assert -len(names) < counts[name] - share < 1
    assert counts == Counter({name: periods * w for name, w in weight_of.items()})


def test_weighted_skips_ineligible_reps() -> None:
    config = make_config({"t": {"strategy": "weighted", "reps": ["anna", "ben"]}},
                         reps=[{"id": "anna", "weight": 5}, {"id": "ben", "weight": 1}])
    decision = choose_rep(lead(), config, state(anna=25), RoutingState({"t": {"anna": 3, "ben": -3}}), None, NOW)
    assert decision.rep_id == "ben" and decision.reason.endswith("(weight 1); anna at capacity 25/25")
    assert decision.cursor == {"anna": 3, "ben": -3}  # ben gained 1 and paid the pool's total of 1


def test_least_loaded_uses_the_capacity_ratio_then_open_count_then_team_order() -> None:
    config = make_config({"t": {"strategy": "least_loaded", "reps": ["carl", "dana", "erin"]}},
                         reps=[{"id": "carl", "capacity": 60}, {"id": "dana", "capacity": 20},
                               {"id": "erin", "capacity": 10}])
    router = Router(config)
    decision = router.choose(lead(), state(carl=10, dana=5, erin=3), RoutingState(), None, NOW)
    assert (decision.rep_id, decision.cursor) == ("carl", None)
    assert decision.reason.endswith("least loaded -> carl (10/60 open)")
    assert router.choose(lead(), state(carl=12, dana=4, erin=2), RoutingState(), None, NOW).rep_id == "erin"
    assert router.choose(lead(), state(carl=6, dana=2, erin=1), RoutingState(), None, NOW).rep_id == "erin"
    assert router.choose(lead(), state(carl=0, dana=0, erin=0), RoutingState(), None, NOW).rep_id == "carl"
    overridden = {"carl": RepState("carl", 10, capacity=11), "dana": RepState("dana", 5), "erin": RepState("erin", 9)}
    assert router.choose(lead(), overridden, RoutingState(), None, NOW).rep_id == "dana"


def test_least_loaded_helper() -> None:
    assert least_loaded(["a", "b"], {"a", "b"}, {"a": (1, 2), "b": (1, 2)}) == "a"
    assert least_loaded(["a", "b"], {"b"}, {"b": (9, 10)}) == "b"


def test_cursors_are_json() -> None:
    for strategy in ("round_robin", "weighted"):
        config = make_config({"t": {"strategy": strategy, "reps": ["anna", "ben"]}})
        cursor = choose_rep(lead(), config, {}, RoutingState(), None, NOW).cursor
        assert json.loads(json.dumps(cursor)) == cursor


# --- working hours -------------------------------------------------------------------------------------------

HOURS = make_config(
    {"t": {"strategy": "round_robin", "reps": ["anna", "carl", "dana"]}},
    reps=[{"id": "anna", "timezone": "Europe/Berlin", **OFFICE},
          {"id": "carl", "timezone": "America/New_York", **OFFICE},
          {"id": "dana", "timezone": "America/Los_Angeles", **OFFICE}])


def test_rep_outside_hours_is_skipped_when_someone_is_in_hours() -> None:
    at = datetime(2026, 3, 11, 16, 30, tzinfo=UTC)  # Berlin 17:30 (out), New York 12:30, LA 09:30
    decision = choose_rep(lead(), HOURS, {}, RoutingState({"t": 2}), None, at)
    assert decision.rep_id == "carl" and decision.cursor == 1
    assert decision.reason.endswith("round robin -> carl; anna outside hours (starts Thu 09:00 Europe/Berlin)")


def test_nobody_in_hours_the_first_to_start_gets_the_lead() -> None:
    at = datetime(2026, 3, 12, 2, 0, tzinfo=UTC)  # Thu: Berlin 03:00, New York Wed 22:00, LA Wed 19:00
    decision = choose_rep(lead(), HOURS, {}, RoutingState({"t": 0}), None, at)
    assert decision.rep_id == "anna"
    assert "nobody in hours; anna starts first at 09:00 Europe/Berlin; round robin -> anna" in decision.reason
    assert "carl starts later (Thu 09:00 America/New_York)" in decision.reason


def test_nobody_in_hours_ties_are_settled_by_the_strategy() -> None:
    config = make_config({"t": {"strategy": "round_robin", "reps": ["anna", "ben"]}},
                         reps=[{"id": "anna", "timezone": "Europe/Berlin", **OFFICE},
                               {"id": "ben", "timezone": "Europe/Paris", **OFFICE}])
    at = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)  # Saturday
    decision = choose_rep(lead(), config, {}, RoutingState({"t": 0}), None, at)
    assert decision.rep_id == "ben" and "anna, ben start first at Mon 09:00" in decision.reason


def test_working_hours_outrank_rotation_only_among_eligible_reps() -> None:
    at = datetime(2026, 3, 11, 16, 30, tzinfo=UTC)  # only carl and dana in hours; both full
    decision = choose_rep(lead(), HOURS, state(carl=25, dana=25), RoutingState({"t": 0}), None, at)
    assert decision.rep_id == "anna" and "nobody in hours; anna starts first" in decision.reason


@pytest.mark.parametrize(("at", "expected"), [
    # 13:30 UTC on a Monday: 09:30 in New York after the March change (EDT), 08:30 before it (EST).
    (datetime(2026, 3, 2, 13, 30, tzinfo=UTC), "anna"),
    (datetime(2026, 3, 9, 13, 30, tzinfo=UTC), "carl"),
    # ... and the reverse around the November change.
    (datetime(2026, 10, 26, 13, 30, tzinfo=UTC), "carl"),
    (datetime(2026, 11, 2, 13, 30, tzinfo=UTC), "anna"),
])
def test_new_york_dst_changes_who_is_in_hours(at: datetime, expected: str) -> None:
    # The cursor points at anna, so rotation alone would give carl; Berlin 14:30 keeps anna in hours.
    decision = choose_rep(lead(), HOURS, {}, RoutingState({"t": 0}), None, at)
    assert decision.rep_id == expected


@pytest.mark.parametrize(("at", "expected"), [
    (datetime(2026, 3, 27, 15, 30, tzinfo=UTC), "anna"),  # Fri 16:30 CET: anna in hours
    (datetime(2026, 3, 30, 15, 30, tzinfo=UTC), "carl"),  # Mon 17:30 CEST: anna gone
    (datetime(2026, 10, 23, 15, 30, tzinfo=UTC), "carl"),  # Fri 17:30 CEST
    (datetime(2026, 10, 26, 15, 30, tzinfo=UTC), "anna"),  # Mon 16:30 CET
])
def test_berlin_dst_changes_who_is_in_hours(at: datetime, expected: str) -> None:
    decision = choose_rep(lead(), HOURS, {}, RoutingState({"t": 2}), None, at)
    assert decision.rep_id == expected


# --- properties ----------------------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"]
NAMES = ["anna", "ben", "carl", "dana", "erin"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[HandoffConfig, dict[str, RepState], list[str], datetime]:
    names = NAMES[: draw(st.integers(1, len(NAMES)))]
    reps = [{"id": n, "timezone": draw(st.sampled_from(ZONES)),
             "available": draw(st.integers(0, 4)) > 0,
             "capacity": draw(st.integers(0, 5)), "weight": draw(st.integers(1, 4)),
             **draw(st.sampled_from([ALL_DAY, OFFICE]))} for n in names]
    strategy = draw(st.sampled_from(["round_robin", "weighted", "least_loaded"]))
    config = make_config({"t": {"strategy": strategy, "reps": names}}, reps=reps)
    live = {n: RepState(n, draw(st.integers(0, 6)), available=draw(st.integers(0, 4)) > 0,
                        capacity=draw(st.none() | st.integers(0, 6))) for n in names}
    exclude = draw(st.lists(st.sampled_from(names), max_size=2))
    at = datetime(2026, 1, 1, tzinfo=UTC) + draw(st.timedeltas(timedelta(0), timedelta(days=365)))
    return config, live, exclude, at


def eligible(config: HandoffConfig, live: dict[str, RepState], exclude: list[str], rep_id: str) -> bool:
    rep, now = config.rep(rep_id), live[rep_id]
    assert rep is not None
    capacity = rep.capacity if now.capacity is None else now.capacity
    return rep.available and now.available and now.open_leads < capacity and rep_id not in exclude


@settings(max_examples=200, deadline=None)
@given(scenario=scenarios(), cursor=st.none() | st.integers(0, 6))
def test_never_an_ineligible_rep_when_an_eligible_one_exists(
        scenario: tuple[HandoffConfig, dict[str, RepState], list[str], datetime], cursor: int | None) -> None:
    config, live, exclude, at = scenario
    decision = choose_rep(lead(), config, live, RoutingState({"t": cursor}), None, at, exclude)
    ok = [n for n in config.teams["t"].reps if eligible(config, live, exclude, n)]
    assert decision.reason
    if not ok:
        assert decision.rep_id is None and "fallback queue" in decision.reason
        return
    assert decision.rep_id in ok
    in_hours = [n for n in ok if is_working(config.rep(n), at)]  # type: ignore[arg-type]
    if in_hours:
        assert decision.rep_id in in_hours


def capacity_of(config: HandoffConfig, live: RepState) -> int:
    rep = config.rep(live.rep_id)
    assert rep is not None
    return rep.capacity if live.capacity is None else live.capacity


@settings(max_examples=40, deadline=None)
@given(scenario=scenarios(), leads=st.integers(1, 40))
def test_applying_decisions_in_sequence_never_exceeds_capacity(
        scenario: tuple[HandoffConfig, dict[str, RepState], list[str], datetime], leads: int) -> None:
    config, live, exclude, at = scenario
    router = Router(config)
    cursors: dict[str, Any] = {}
    headroom = sum(capacity_of(config, s) - s.open_leads for n, s in live.items()
                   if eligible(config, live, exclude, n))
    assigned = 0
    for _ in range(leads):
        decision = router.choose(lead(), live, RoutingState(cursors), None, at, exclude)
        if decision.rep_id is None:
            break
        if decision.cursor is not None:
            cursors[decision.team or ""] = decision.cursor
        before = live[decision.rep_id]
        assert before.open_leads + 1 <= capacity_of(config, before)
        live[decision.rep_id] = RepState(before.rep_id, before.open_leads + 1, before.available, before.capacity)
        assigned += 1
    assert assigned == min(leads, headroom)  # the fallback queue only once every eligible rep is full
