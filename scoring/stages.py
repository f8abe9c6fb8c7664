"""The funnel's stages and the part of it scoring owns (anonymous -> known -> engaged).

::

    scoring_stage("anonymous", has_known_identity=True, engagement_points_earned=False)  # "known"
    scoring_stage("mql", has_known_identity=True, engagement_points_earned=True)         # "mql"

Later stages (mql, sql, ...) belong to the router and to sales' feedback; scoring never touches them
and never demotes a lead. Engaged needs a known identity too: the funnel is ordered and an anonymous
visitor's engagement counts as soon as they are identified (their earlier touchpoints join the lead).
"""

from __future__ import annotations

from services.stages import STAGES, stage_rank

__all__ = ["SCORING_STAGES", "STAGES", "engagement_can_move", "scoring_stage", "stage_rank"]

SCORING_STAGES = ("anonymous", "known", "engaged")


def scoring_stage(current: str, has_known_identity: bool, engagement_points_earned: bool) -> str:
    """The stage after scoring: only moves forward among anonymous/known/engaged.

    Known = the lead has an email or a user id. Engaged = known and at least one engagement item with
    positive points (``LeadScoreState.has_positive_engagement``). Stages from mql on, ``recycled`` and
    ``disqualified`` are returned unchanged.
    """
    stage_rank(current)  # reject typos loudly rather than silently keeping a bad stage
    if current not in SCORING_STAGES:
        return current
    if not has_known_identity:
        target = "anonymous"
    elif engagement_points_earned:
        target = "engaged"
    else:
        target = "known"
    return target if stage_rank(target) > stage_rank(current) else current


def engagement_can_move(current: str, has_known_identity: bool) -> bool:
    """Can earning engagement points move a lead from ``current``? Only a known lead not yet engaged:
    for any other, :func:`scoring_stage` gives the same stage whatever ``engagement_points_earned`` is
    (so a caller can skip finding that out: a scan of all the lead's items)."""
    return has_known_identity and current in SCORING_STAGES and stage_rank(current) < stage_rank("engaged")
