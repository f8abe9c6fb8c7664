"""Qualification: thresholds, fast-track, disqualify, no un-qualifying, recycled leads re-qualify."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.explain import describe_values, describe_when, fmt_number
from router.qualify import NURTURE_STAGES, OWNED_STAGES, STAGES, Qualification, Qualifier, qualify
from services.config import Qualification as QualificationConfig

CONFIG = QualificationConfig.model_validate({
    "mql": {"fit_min": 10, "engagement_min": 40},
    "fast_track": ["demo-request", "demo-requested-segment"],
    "disqualify": [
        {"traits.email_domain": {"in": ["competitor.com"]}},
        {"traits.title": {"regex": "(?i)student"}, "traits.country": "US"},
    ],
})


def lead(fit: float = 25, engagement: float = 45, **traits: Any) -> dict[str, Any]:
    return {"fit": fit, "engagement": engagement, "email": "jane@acme.com", "company_domain": "acme.com",
            "traits": {"email_domain": "acme.com", **traits}}


def test_meets_both_thresholds_becomes_mql_with_the_numbers_in_the_reason() -> None:
    assert qualify(lead(25, 45), "engaged", set(), CONFIG) == Qualification(
        "mql", "fit 25 >= 10 and engagement 45 >= 40")


def test_thresholds_are_inclusive() -> None:
    assert qualify(lead(10, 40), "known", [], CONFIG).stage == "mql"


@pytest.mark.parametrize(("fit", "engagement", "expected"), [
    (9, 100, "not qualified: fit 9 < 10; engagement 100 >= 40"),
    (25, 39.5, "not qualified: fit 25 >= 10; engagement 39.5 < 40"),
    (25, 39.999, "not qualified: fit 25 >= 10; engagement 39.999 < 40"),
])
def test_below_a_threshold_stays_with_a_reason(fit: float, engagement: float, expected: str) -> None:
    assert qualify(lead(fit, engagement), "engaged", [], CONFIG) == Qualification(None, expected)


def test_fast_track_qualifies_at_once_when_fit_is_met() -> None:
    result = qualify(lead(25, 0), "anonymous", ["blog-visit", "demo-request"], CONFIG)
    assert result == Qualification("mql", "fast-track rule demo-request (fit 25 >= 10)")


def test_fast_track_needs_fit() -> None:
    result = qualify(lead(5, 60), "known", ["demo-request"], CONFIG)
    assert result.stage is None
    assert "fit 5 < 10" in result.reason and "fast-track rule demo-request hit but fit is not met" in result.reason


def test_a_rule_that_is_not_fast_track_does_not_qualify() -> None:
    assert qualify(lead(25, 10), "engaged", ["pricing-page"], CONFIG).stage is None


def test_disqualify_wins_over_fast_track_and_thresholds_and_is_recorded() -> None:
    result = qualify(lead(90, 500, email_domain="Competitor.COM"), "engaged", ["demo-request"], CONFIG)
    assert result == Qualification("disqualified", "disqualify rule 1 (traits.email_domain in [competitor.com])")


def test_disqualify_reason_numbers_the_rule_and_lists_every_condition() -> None:
    result = qualify(lead(title="Student", country="US"), "known", [], CONFIG)
    assert result == Qualification(
        "disqualified", "disqualify rule 2 (traits.title matches /(?i)student/ and traits.country = US)")
    assert qualify(lead(title="Student", country="DE"), "known", [], CONFIG).stage == "mql"


@pytest.mark.parametrize("stage", ["anonymous", "known", "engaged", "mql", "recycled"])
def test_disqualify_applies_before_sql(stage: str) -> None:
    assert qualify(lead(email_domain="competitor.com"), stage, [], CONFIG).stage == "disqualified"


@pytest.mark.parametrize("stage", sorted(OWNED_STAGES))
def test_a_lead_a_rep_owns_is_not_disqualified_automatically(stage: str) -> None:
    result = qualify(lead(email_domain="competitor.com"), stage, [], CONFIG)
    assert result.stage is None
    assert f"already {stage}" in result.reason and "disqualify rule 1" in result.reason


def test_disqualified_stays_disqualified() -> None:
    assert qualify(lead(90, 90), "disqualified", ["demo-request"], CONFIG) == Qualification(
        None, "already disqualified")


@pytest.mark.parametrize("stage", ["mql", *sorted(OWNED_STAGES)])
def test_falling_below_thresholds_after_decay_does_not_unqualify(stage: str) -> None:
    result = qualify(lead(fit=0, engagement=1.5), stage, [], CONFIG)
    assert result.stage is None and f"already {stage}" in result.reason


@pytest.mark.parametrize("stage", ["mql", *sorted(OWNED_STAGES)])
def test_mql_and_beyond_do_not_requalify(stage: str) -> None:
    assert qualify(lead(90, 90), stage, ["demo-request"], CONFIG).stage is None


def test_recycled_lead_can_requalify() -> None:
    assert qualify(lead(25, 45), "recycled", [], CONFIG) == Qualification(
        "mql", "re-qualified from recycled: fit 25 >= 10 and engagement 45 >= 40")
    assert qualify(lead(25, 0), "recycled", ["demo-request"], CONFIG).stage == "mql"
    assert qualify(lead(25, 0), "recycled", [], CONFIG).stage is None


def test_unscored_lead_counts_as_zero_points() -> None:
    assert qualify({"traits": {}}, "anonymous", [], CONFIG).reason == \
        "not qualified: fit 0 < 10; engagement 0 < 40"


def test_bad_input_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="unknown lead stage 'MQL'"):
        qualify(lead(), "MQL", [], CONFIG)
    with pytest.raises(ValueError, match="'fit' must be a number"):
        qualify({"fit": "25", "engagement": 45}, "known", [], CONFIG)


def test_default_config_qualifies_everyone_not_yet_mql() -> None:
    assert qualify({"fit": 0, "engagement": 0}, "anonymous", [], QualificationConfig()).stage == "mql"


@settings(max_examples=300, deadline=None)
@given(
    fit=st.floats(-50, 100, allow_nan=False) | st.integers(-50, 100),
    engagement=st.floats(-50, 200, allow_nan=False) | st.integers(-50, 200),
    stage=st.sampled_from(STAGES),
    rules_hit=st.sets(st.sampled_from(["demo-request", "pricing-page", "demo-requested-segment", "x"])),
    competitor=st.booleans(),
)
def test_qualification_policy_holds(fit: float, engagement: float, stage: str, rules_hit: set[str],
                                    competitor: bool) -> None:
    data = lead(fit, engagement, email_domain="competitor.com" if competitor else "acme.com")
    result = Qualifier(CONFIG).qualify(data, stage, rules_hit)
    assert result == qualify(data, stage, rules_hit, CONFIG)
    assert result.reason
    if stage in NURTURE_STAGES or stage == "mql":
        if competitor:
            assert result.stage == "disqualified"
            return
    if stage not in NURTURE_STAGES:
        assert result.stage is None  # nothing at mql or beyond is moved by a score
        return
    fast = bool(rules_hit & {"demo-request", "demo-requested-segment"})
    assert (result.stage == "mql") == (fit >= 10 and (engagement >= 40 or fast))
    assert result.stage in ("mql", None)


def test_fmt_number_never_rounds_onto_the_threshold() -> None:
    assert fmt_number(25.0) == "25"
    assert fmt_number(12.3456) == "12.35"
    assert fmt_number(39.999, versus=40) == "39.999"
    assert fmt_number(39.9999999, versus=40) == "39.9999999"
    assert fmt_number(-0.001) == "0"


def test_describe_when_and_values() -> None:
    when = {"traits.country": {"in": ["DE", "FR"]}, "traits.employees": {"gte": 50, "lte": 500},
            "properties.path": {"prefix": "/pricing"}, "traits.vip": {"exists": True}, "type": "page_view"}
    assert describe_when(when) == (
        "traits.country in [DE, FR] and traits.employees >= 50 and traits.employees <= 500 and "
        "properties.path starts with /pricing and traits.vip exists and type = page_view")
    assert describe_when({}) == "catch-all"
    assert describe_values({"traits.country": {"in": ["DE"]}, "traits.size": 5},
                           {"traits": {"country": "DE"}}) == "traits.country DE, traits.size missing"
