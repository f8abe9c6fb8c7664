"""Scoring's part of the funnel: anonymous -> known -> engaged, forward only."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.stages import SCORING_STAGES, STAGES, engagement_can_move, scoring_stage, stage_rank


def test_stage_order_matches_the_contract() -> None:
    assert STAGES[:9] == ("anonymous", "known", "engaged", "mql", "sql", "contacted", "opportunity", "won",
                          "lost")
    assert {"recycled", "disqualified"} <= set(STAGES)
    assert stage_rank("anonymous") < stage_rank("known") < stage_rank("engaged") < stage_rank("mql")


@pytest.mark.parametrize(
    ("current", "known", "engaged", "expected"),
    [
        ("anonymous", False, False, "anonymous"),
        ("anonymous", True, False, "known"),
        ("anonymous", True, True, "engaged"),
        ("anonymous", False, True, "anonymous"),  # engagement counts once the person is identified
        ("known", True, True, "engaged"),
        ("known", False, False, "known"),  # never demotes
        ("engaged", True, False, "engaged"),  # e.g. an unsubscribe took the points back: stays engaged
    ],
)
def test_scoring_stage(current: str, known: bool, engaged: bool, expected: str) -> None:
    assert scoring_stage(current, known, engaged) == expected


@settings(max_examples=50)
@given(current=st.sampled_from(STAGES), known=st.booleans(), engaged=st.booleans())
def test_never_demotes_and_never_touches_later_stages(current: str, known: bool, engaged: bool) -> None:
    after = scoring_stage(current, known, engaged)
    if current in SCORING_STAGES:
        assert after in SCORING_STAGES and stage_rank(after) >= stage_rank(current)
    else:
        assert after == current


def test_unknown_stage_is_refused_with_the_valid_list() -> None:
    with pytest.raises(ValueError, match=r"unknown stage 'MQL'.*anonymous, known"):
        scoring_stage("MQL", True, True)


@pytest.mark.parametrize("current", STAGES)
@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("earned", [True, False])
def test_engagement_matters_only_to_a_known_lead_not_yet_engaged(current: str, known: bool, earned: bool) -> None:
    # The consumer scans a lead's items for positive points only when engagement_can_move says so.
    asked = engagement_can_move(current, known) and earned
    assert scoring_stage(current, known, asked) == scoring_stage(current, known, earned)
    assert engagement_can_move(current, known) == (known and current in ("anonymous", "known"))
