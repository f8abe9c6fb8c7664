"""RuleSet by example: matching, several rules per touchpoint, caps, negatives, traits, merge, score."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scoring.rules import RuleSet, decay_factor
from scoring.state import LeadScoreState
from services.config import EngagementRule, FitRule, Scoring
from tests.unit.scoring.support import T0, rules, touch

RULES = rules()
EMPTY = LeadScoreState.empty()


def pricing(event_id: str, at: datetime) -> dict[str, object]:
    return touch(event_id, at, properties={"path": "/pricing"})


def earned(state: LeadScoreState) -> list[tuple[str, str | None]]:
    return [(item.rule, item.event_id) for item in state.engagement_items]


# -- matching ---------------------------------------------------------------------------------------

def test_a_touchpoint_earns_every_rule_it_matches() -> None:
    state = RULES.apply(EMPTY, pricing("p1", T0))
    assert sorted(earned(state)) == [("any-page", "p1"), ("pricing-page", "p1")]
    assert RULES.score(state, T0).engagement == 11


def test_non_matching_touchpoint_earns_nothing() -> None:
    state = RULES.apply(EMPTY, touch("x", T0, "webinar_attended"))
    assert state.engagement_items == ()
    assert state is EMPTY  # nothing to fold: the very same state


def test_type_is_matched_case_insensitively_like_the_matchers() -> None:
    state = RULES.apply(EMPTY, touch("d", T0, "FORM_SUBMIT", properties={"form": "Demo"}))
    assert earned(state) == [("demo-request", "d")]


def test_rules_without_a_type_apply_to_every_type() -> None:
    state = RULES.apply(EMPTY, touch("b", T0, "crm_update", properties={"amount": 5000}))
    assert earned(state) == [("big-deal", "b")]
    state = RULES.apply(EMPTY, touch("c", T0, properties={"amount": 5000, "path": "/x"}))
    assert sorted(earned(state)) == [("any-page", "c"), ("big-deal", "c")]


def test_negative_points_lower_the_engagement_and_the_total() -> None:
    state = RULES.apply_many(EMPTY, [touch("d", T0, "form_submit", properties={"form": "demo"}),
                                     touch("u", T0, "email_unsubscribe")])
    score = RULES.score(state, T0)
    assert score.engagement == 25
    assert score.rules_hit == {"demo-request", "unsubscribed"}
    assert not RULES.apply(EMPTY, touch("u", T0, "email_unsubscribe")).has_positive_engagement


def test_occurred_at_may_be_a_datetime_or_an_offset_string() -> None:
    a = RULES.apply(EMPTY, touch("p", "2026-11-22T10:00:00+02:00", properties={"path": "/pricing"}))
    b = RULES.apply(EMPTY, {**pricing("p", T0), "occurred_at": datetime(2026, 11, 22, 8, tzinfo=UTC)})
    assert a == b


@pytest.mark.parametrize(
    ("change", "needle"),
    [({"event_id": None}, "event_id"), ({"event_id": ""}, "event_id"), ({"occurred_at": None}, "occurred_at"),
     ({"occurred_at": "yesterday"}, "ISO 8601")],
)
def test_a_touchpoint_that_cannot_be_scored_says_why(change: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        RULES.apply(EMPTY, {**pricing("p", T0), **change})


# -- caps -------------------------------------------------------------------------------------------

def test_cap_counts_per_rule_per_utc_day() -> None:
    day1 = [pricing(f"p{i}", T0 + timedelta(hours=i)) for i in range(4)]
    day2 = [pricing("q0", T0 + timedelta(days=1))]
    state = RULES.apply_many(EMPTY, day1 + day2)
    counted = [e for r, e in earned(state) if r == "pricing-page"]
    assert counted == ["p0", "p1", "q0"]  # 2 per day for pricing-page
    assert [e for r, e in earned(state) if r == "any-page"] == ["p0", "p1", "p2", "q0"]  # its own cap: 3


def test_cap_day_is_the_utc_calendar_day() -> None:
    # 23:30 and 00:30 UTC are different days even though they are the same evening in New York.
    late = [pricing(f"l{i}", datetime(2026, 11, 22, 23, 30 + i, tzinfo=UTC)) for i in range(2)]
    early = pricing("e", datetime(2026, 11, 23, 0, 30, tzinfo=UTC))
    state = RULES.apply_many(EMPTY, [*late, early])
    assert [e for r, e in earned(state) if r == "pricing-page"] == ["l0", "l1", "e"]


def test_a_late_arriving_earlier_touchpoint_displaces_the_latest_counted_one() -> None:
    state = RULES.apply_many(EMPTY, [pricing("p2", T0 + timedelta(hours=2)), pricing("p3", T0 + timedelta(hours=3))])
    state = RULES.apply(state, pricing("p1", T0 + timedelta(hours=1)))
    assert [e for r, e in earned(state) if r == "pricing-page"] == ["p1", "p2"]
    # and the displaced one stays out even if it is redelivered
    assert RULES.apply(state, pricing("p3", T0 + timedelta(hours=3))) == state


def test_cap_ties_on_time_are_broken_by_event_id() -> None:
    same = [pricing(e, T0) for e in ("c", "a", "b")]
    state = RULES.apply_many(EMPTY, same)
    assert [e for r, e in earned(state) if r == "pricing-page"] == ["a", "b"]


def test_cap_applies_to_negative_rules_too() -> None:
    spam = [touch(f"s{i}", T0 + timedelta(minutes=i), "email_unsubscribe", properties={"reason": "spam"})
            for i in range(3)]
    state = RULES.apply_many(EMPTY, spam)
    assert [e for r, e in earned(state) if r == "spam-complaint"] == ["s0"]
    assert [e for r, e in earned(state) if r == "unsubscribed"] == ["s0", "s1", "s2"]  # uncapped


# -- traits -----------------------------------------------------------------------------------------

def test_traits_latest_occurred_at_wins_whatever_the_arrival_order() -> None:
    old = touch("old", T0, traits={"title": "Intern", "country": "DE"})
    new = touch("new", T0 + timedelta(days=1), traits={"title": "VP Sales"})
    for order in ([old, new], [new, old]):
        state = RULES.apply_many(EMPTY, order)
        assert state.traits["title"] == "VP Sales"
        assert state.traits["country"] == "DE"
        assert state.traits_at["title"][1] == "new"


def test_trait_tie_on_time_goes_to_the_larger_event_id() -> None:
    a = touch("a", T0, traits={"title": "A"})
    b = touch("b", T0, traits={"title": "B"})
    assert RULES.apply_many(EMPTY, [b, a]).traits["title"] == "B"
    assert RULES.apply_many(EMPTY, [a, b]).traits["title"] == "B"


def test_email_domain_and_company_domain_are_derived() -> None:
    state = RULES.apply(EMPTY, touch("e", T0, email="  Jane.Doe@Acme.COM "))
    assert state.traits["email_domain"] == "acme.com"
    assert state.company_domain == "acme.com"


def test_free_mail_falls_back_to_declared_company_domain_then_website() -> None:
    free = touch("e", T0, email="jane@gmail.com")
    assert RULES.apply(EMPTY, free).company_domain is None
    with_site = {**free, "traits": {"website": "https://www.Initech.io/about"}}
    assert RULES.apply(EMPTY, with_site).company_domain == "initech.io"
    with_both = {**free, "traits": {"website": "initech.io", "company_domain": "Globex.com"}}
    assert RULES.apply(EMPTY, with_both).company_domain == "globex.com"


def test_a_business_email_beats_declared_company_domain_but_keeps_it_declared() -> None:
    state = RULES.apply(EMPTY, touch("e", T0, email="jane@acme.com", traits={"company_domain": "other.com"}))
    assert state.company_domain == "acme.com"
    assert state.declared_traits["company_domain"] == "other.com"
    # Switching to a free-mail address later falls back to the declared one, which was not lost.
    state = RULES.apply(state, touch("f", T0 + timedelta(days=1), email="jane@gmail.com"))
    assert state.company_domain == "other.com"


def test_traits_email_is_used_when_the_touchpoint_has_no_email() -> None:
    state = RULES.apply(EMPTY, touch("i", T0, "identify", traits={"email": "jane@Acme.com"}))
    assert state.traits["email_domain"] == "acme.com"


# -- fit --------------------------------------------------------------------------------------------

def test_fit_rules_match_traits_and_are_dated_by_the_trait_write() -> None:
    state = RULES.apply_many(EMPTY, [
        touch("t", T0, traits={"title": "Head of Growth"}),
        touch("s", T0 + timedelta(days=2), traits={"employees": 80}, email="jane@gmail.com"),
    ])
    items = {item.rule: item for item in RULES.fit_items(state.traits, state.traits_at)}
    assert set(items) == {"senior-title", "target-size", "free-mail"}
    assert items["senior-title"].at == T0
    assert items["target-size"].at == T0 + timedelta(days=2)
    assert all(item.kind == "fit" and item.event_id is None for item in items.values())
    score = RULES.score(state, T0 + timedelta(days=400))
    assert score.fit == 20 + 10 - 15  # fit never decays


def test_fit_items_without_times_and_for_derived_company_domain() -> None:
    assert [i.rule for i in RULES.fit_items({"company_domain": "acme.com"})] == ["known-company"]
    assert RULES.fit_items({"company_domain": "acme.com"})[0].at is None
    state = RULES.apply(EMPTY, touch("e", T0, email="jane@acme.com"))
    (item,) = RULES.fit_items(state.traits, state.traits_at)
    assert (item.rule, item.at) == ("known-company", T0)
    # A rule on company_domain reads three traits: it dates from the latest write of any of them.
    later = RULES.apply(state, touch("w", T0 + timedelta(days=1), traits={"website": "https://acme.com"}))
    assert [(i.rule, i.at) for i in RULES.state_fit_items(later)] == [("known-company", T0 + timedelta(days=1))]


# -- merge ------------------------------------------------------------------------------------------

def test_merge_keeps_both_histories_and_re_applies_caps() -> None:
    a = RULES.apply_many(EMPTY, [pricing("a1", T0 + timedelta(hours=1)), pricing("a3", T0 + timedelta(hours=3))])
    b = RULES.apply_many(EMPTY, [pricing("b2", T0 + timedelta(hours=2)),
                                 touch("d", T0, "form_submit", properties={"form": "demo"})])
    merged = RULES.merge(a, b)
    assert [e for r, e in earned(merged) if r == "pricing-page"] == ["a1", "b2"]
    assert ("demo-request", "d") in earned(merged)
    assert [e for r, e in earned(merged) if r == "any-page"] == ["a1", "b2", "a3"]
    assert RULES.merge(merged, merged) == merged
    assert RULES.merge(EMPTY, merged) == merged


def test_merge_takes_the_latest_trait_from_either_side() -> None:
    a = RULES.apply(EMPTY, touch("a", T0 + timedelta(days=1), traits={"title": "VP"}, email="j@acme.com"))
    b = RULES.apply(EMPTY, touch("b", T0, traits={"title": "Intern", "country": "FR"}))
    merged = RULES.merge(b, a)
    assert dict(merged.traits) == {"title": "VP", "country": "FR", "email_domain": "acme.com",
                                   "company_domain": "acme.com"}


# -- score ------------------------------------------------------------------------------------------

def test_score_decays_engagement_only_and_explains_every_point() -> None:
    state = RULES.apply_many(EMPTY, [
        touch("d", T0, "form_submit", properties={"form": "demo"}, traits={"title": "VP"}),
    ])
    score = RULES.score(state, T0 + timedelta(days=30))  # one half-life of the config
    assert score.engagement == pytest.approx(25)
    assert score.fit == 20
    assert score.total == pytest.approx(45)
    body = score.to_json()
    assert body["fit"] == 20 and body["engagement"] == 25 and body["total"] == 45
    assert body["rules_hit"] == ["demo-request"]
    lines = {line["rule"]: line for line in body["breakdown"]}
    assert lines["demo-request"] == {"rule": "demo-request", "kind": "engagement", "points": 50,
                                     "decayed_points": 25, "event_id": "d", "at": "2026-11-22T00:00:00Z"}
    assert lines["senior-title"]["points"] == 20 and lines["senior-title"]["kind"] == "fit"


def test_score_rounds_only_in_json() -> None:
    state = RULES.apply(EMPTY, touch("d", T0, "form_submit", properties={"form": "demo"}))
    score = RULES.score(state, T0 + timedelta(days=7))
    assert score.engagement != round(score.engagement, 2)
    assert score.to_json()["engagement"] == round(score.engagement, 2)


def test_future_touchpoints_do_not_grow_and_half_life_override_wins() -> None:
    state = RULES.apply(EMPTY, touch("d", T0 + timedelta(days=5), "form_submit", properties={"form": "demo"}))
    assert RULES.score(state, T0).engagement == 50  # age is clamped at 0
    assert RULES.score(state, T0 + timedelta(days=15), half_life_days=10).engagement == pytest.approx(25)
    assert RULES.score(state, T0 + timedelta(days=500), half_life_days=0).engagement == 50


def test_decay_factor_edges() -> None:
    assert decay_factor(T0, T0, 30) == 1
    assert decay_factor(T0, T0 + timedelta(days=60), 30) == pytest.approx(0.25)
    assert decay_factor(T0, T0 - timedelta(days=1), 30) == 1
    assert decay_factor(None, T0, 30) == 1
    assert decay_factor(T0, T0 + timedelta(days=60), 0) == 1


def test_config_without_decay_and_empty_rules() -> None:
    flat = RuleSet.from_config(Scoring.model_validate({"decay_half_life_days": 0}))
    state = flat.apply(EMPTY, pricing("p", T0))
    assert state.engagement_items == ()
    score = flat.score(state, T0)
    assert (score.fit, score.engagement, score.total, score.breakdown) == (0, 0, 0, ())


@pytest.mark.parametrize("section", ["engagement", "fit"])
def test_a_bad_rule_is_reported_with_its_name(section: str) -> None:
    # The config loader already refuses this; model_construct skips it to reach RuleSet's own check.
    rule_type = EngagementRule if section == "engagement" else FitRule
    broken = rule_type.model_construct(name="broken", when={"properties.path": {"regex": "("}}, points=1)
    bad = Scoring.model_construct(decay_half_life_days=30, engagement=[], fit=[])
    bad = bad.model_copy(update={section: [broken]})
    with pytest.raises(ValueError, match=rf"scoring\.{section}\.0 \('broken'\).*invalid regex"):
        RuleSet.from_config(bad)


def test_merge_is_commutative_even_for_one_event_id_seen_with_two_contents() -> None:
    # Should never happen (an id is one touchpoint), but if a sender reuses an id the merge must
    # still not depend on which lead is merged into which.
    a = RULES.apply(EMPTY, touch("same", T0, traits={"title": "VP"}))
    b = RULES.apply(EMPTY, touch("same", T0, traits={"title": "Intern"}))
    assert RULES.merge(a, b) == RULES.merge(b, a)
    assert RULES.merge(a, b).traits["title"] == "VP"  # settled by the value's JSON, not by argument order


def test_fit_kept_on_a_state_is_per_rule_set() -> None:
    state = RULES.apply(EMPTY, touch("t", T0, traits={"title": "VP", "employees": 80}))
    assert [i.rule for i in RULES.state_fit_items(state)] == ["senior-title", "target-size"]
    only_size = RuleSet.from_config(Scoring(fit=[FitRule(name="size", when={"traits.employees": {"gte": 50}},
                                                         points=1)]))
    assert [i.rule for i in only_size.state_fit_items(state)] == ["size"]
    assert only_size.score(state, T0).fit == 1 and RULES.score(state, T0).fit == 30
