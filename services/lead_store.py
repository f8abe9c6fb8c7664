"""Writes to the lead state that several services make (each inside the caller's transaction).

    await record_stage(conn, lead_id, "mql", "sql", at=now, cause="assigned to anna (round robin)")
    values, history_row = stage_move(lead_id, "mql", "sql", at=now, cause="...")   # the same, unwritten
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.db.models import leads, stage_history
from services.stage_chain import refresh_stage_chain


async def record_stage(conn: AsyncConnection, lead_id: str, from_stage: str | None, to_stage: str, *,
                       at: datetime, cause: str, **lead_values: Any) -> None:
    """Move the lead to ``to_stage`` (with any other column values) and write the history row."""
    values, history_row = stage_move(lead_id, from_stage, to_stage, at=at, cause=cause, **lead_values)
    await conn.execute(update(leads).where(leads.c.id == lead_id).values(**values))
    await conn.execute(stage_history.insert().values(**history_row))
    await refresh_stage_chain(conn, [lead_id])


def stage_move(lead_id: str, from_stage: str | None, to_stage: str, *, at: datetime, cause: str,
               **lead_values: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A move's new ``leads`` column values and its ``stage_history`` row, for a writer that batches
    them (the router); :func:`record_stage` writes them at once."""
    values: dict[str, Any] = {"stage": to_stage, "updated_at": at, **lead_values}
    if from_stage != to_stage:
        values["stage_changed_at"] = at
    history_row = {"lead_id": lead_id, "from_stage": from_stage, "to_stage": to_stage, "at": at,
                   "cause": cause[:2000]}
    return values, history_row
