"""The stage chain (services/stage_chain.py) recomputed in plain Python, to check what was stored."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from services.db.models import stage_history
from services.stages import FUNNEL


def expected_chain(rows: Sequence[Any]) -> dict[int, tuple[datetime | None, float | None, int | None]]:
    """The chain computed in plain Python from the stored rows: id -> (left_at, stay, top)."""
    out: dict[int, tuple[datetime | None, float | None, int | None]] = {}
    by_lead: dict[str, list[Any]] = {}
    for row in rows:
        by_lead.setdefault(row.lead_id, []).append(row)
    for history in by_lead.values():
        moves = [r for r in sorted(history, key=lambda r: (r.at, r.id))
                 if r.from_stage is None or r.from_stage != r.to_stage]
        top = -1
        for i, move in enumerate(moves):
            top = max(top, FUNNEL.index(move.to_stage) if move.to_stage in FUNNEL else -1)
            left = moves[i + 1].at if i + 1 < len(moves) else None
            out[move.id] = (left, (left - move.at).total_seconds() if left else None, top)
        for row in history:
            out.setdefault(row.id, (None, None, None))
    return out


async def stored(conn: Any) -> list[Any]:
    return list((await conn.execute(select(stage_history).order_by(stage_history.c.id))).all())


def assert_chain(rows: Sequence[Any]) -> None:
    expected = expected_chain(rows)
    for row in rows:
        left, stay, top = expected[row.id]
        assert (row.left_at, row.top) == (left, top), f"row {row.id} of {row.lead_id}"
        assert row.stay == pytest.approx(stay, abs=1e-3) if stay is not None else row.stay is None
