"""The funnel's stages (contract section 4), shared by every service.

``anonymous -> known -> engaged -> mql -> sql -> contacted -> opportunity -> won | lost``, plus
``recycled`` (back to nurture after sales rejected the lead) and ``disqualified``.
"""

from __future__ import annotations

# Funnel order. ``won`` and ``lost`` are both terminal; ``recycled`` and ``disqualified`` sit outside
# the line (back to nurture after a rejection, and out of the funnel).
STAGES = ("anonymous", "known", "engaged", "mql", "sql", "contacted", "opportunity", "won", "lost",
          "recycled", "disqualified")
FUNNEL = ("anonymous", "known", "engaged", "mql", "sql", "contacted", "opportunity", "won")


def stage_rank(stage: str) -> int:
    """Position in :data:`STAGES`; ``ValueError`` naming the valid stages for anything else."""
    try:
        return STAGES.index(stage)
    except ValueError:
        raise ValueError(f"unknown stage {stage!r}; stages are: {', '.join(STAGES)}") from None
