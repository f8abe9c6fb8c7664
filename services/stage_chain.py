"""Each lead's chain of stage moves, derived on write so that the funnel report reads plain rows.

A *move* is a ``stage_history`` row that changes the lead's stage (or its first row); rows re-entering
the stage the lead is in (a reassignment, ``sql -> sql``) are not moves. For every move, ordered per
lead by ``(at, id)``:

- ``left_at``: when the lead made its next move (NULL while it is still there: its latest move);
- ``stay``: ``left_at - at`` in seconds;
- ``top``: the furthest funnel rank (``services.stages.FUNNEL``) reached up to and including this move;
  -1 while the lead has only been off the funnel.

Non-moves keep all three NULL. Whoever inserts history rows calls :func:`refresh_stage_chain` for those
leads in the same transaction::

    await conn.execute(stage_history.insert(), rows)
    await refresh_stage_chain(conn, {row["lead_id"] for row in rows})

except for a lead's very first row, written with the lead (nothing to read: it is the whole chain), which
can carry its ``top`` itself: ``row["top"] = first_move_top(row["to_stage"])``.

The whole chain of each lead is recomputed (a handful of rows, through ``ix_stage_history_lead``), so a
row written with an earlier ``at`` than the lead's latest move (a CRM callback reporting a past time)
still leaves a correct chain. Only rows whose values change are rewritten.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import String, any_, bindparam, case, func, literal_column, or_, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.elements import ColumnElement, TextClause

from services.db.dialect import seconds_between
from services.db.models import stage_history
from services.stages import FUNNEL

CHUNK = 500  # leads per statement: bounded parameter lists on both dialects

sh = stage_history.c


def is_move() -> ColumnElement[bool]:
    """The history rows that change the lead's stage (see the module docstring)."""
    return or_(sh.from_stage.is_(None), sh.from_stage != sh.to_stage)


_FUNNEL_RANK = {name: rank for rank, name in enumerate(FUNNEL)}  # off the funnel: -1


def first_move_top(stage: str) -> int:
    """``top`` of a lead's first history row (its chain is that one move: no ``left_at``, no ``stay``)."""
    return _FUNNEL_RANK.get(stage, -1)


def funnel_rank(stage: Any) -> ColumnElement[int]:
    """A stage column's position in the funnel; -1 off the funnel (lost, recycled, disqualified)."""
    return case(_FUNNEL_RANK, value=stage, else_=-1)


async def refresh_stage_chain(conn: AsyncConnection, lead_ids: Iterable[str]) -> None:
    """Recompute ``left_at``, ``stay`` and ``top`` for every move of these leads (one UPDATE per chunk)."""
    for statement, parameters in stage_chain_updates(conn.dialect.name, lead_ids):
        await conn.execute(statement, parameters)


def stage_chain_updates(dialect: str, lead_ids: Iterable[str]) -> list[tuple[Update, dict[str, list[str]]]]:
    """:func:`refresh_stage_chain`'s statements and their parameters, built but not sent."""
    return _per_chunk(_chain_of_leads(dialect), lead_ids)


def stage_chain_texts(lead_ids: Iterable[str]) -> list[tuple[TextClause, dict[str, list[str]]]]:
    """PostgreSQL: :func:`stage_chain_updates` as text statements whose one parameter is ``lead_ids``,
    for a caller that sends them as parts of one statement (``services.db.arrays.combined_statements``:
    such a part does not see the rows its sibling parts write, so only moves written before it)."""
    return _per_chunk(_chain_of_leads_text(), lead_ids)


S = TypeVar("S")


def _per_chunk(statement: S, lead_ids: Iterable[str]) -> list[tuple[S, dict[str, list[str]]]]:
    """``statement`` with each chunk of the ids (sorted, no repeats) as its ``lead_ids``."""
    ids = sorted(set(lead_ids))
    return [(statement, {"lead_ids": ids[start:start + CHUNK]}) for start in range(0, len(ids), CHUNK)]


@lru_cache(maxsize=1)
def _chain_of_leads_text() -> TextClause:
    """The PostgreSQL UPDATE of :func:`_chain_of_leads` as SQL text: its constants written in, the ids
    the only parameter."""
    statement = _chain_update("postgresql", sh.lead_id == any_(literal_column("CAST(:lead_ids AS VARCHAR[])")))
    return text(str(statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})))


def chain_update(dialect: str) -> Update:
    """The UPDATE deriving the chain of every lead (as the migration backfills)."""
    return _chain_update(dialect, None)


@lru_cache(maxsize=4)
def _chain_of_leads(dialect: str) -> Update:
    """The UPDATE for the leads of the ``lead_ids`` parameter, built once per dialect: building it took
    0.6 ms, on every batch of the scoring consumer and the router. On PostgreSQL the ids are one array,
    so its SQL text is the same for any number of leads (an ``IN`` list is a new statement to prepare
    for each length)."""
    if dialect == "postgresql":
        return _chain_update(dialect, sh.lead_id == any_(bindparam("lead_ids", type_=postgresql.ARRAY(String))))
    return _chain_update(dialect, sh.lead_id.in_(bindparam("lead_ids", expanding=True)))


def _chain_update(dialect: str, which: ColumnElement[bool] | None) -> Update:
    window: dict[str, Any] = {"partition_by": sh.lead_id, "order_by": (sh.at, sh.id)}
    chain = select(
        sh.id.label("move_id"),
        func.lead(sh.at).over(**window).label("next_at"),
        func.max(funnel_rank(sh.to_stage)).over(**window, rows=(None, 0)).label("reached"),
    ).where(is_move(), *([which] if which is not None else [])).subquery()
    return (
        update(stage_history)
        .where(sh.id == chain.c.move_id,
               or_(sh.top.is_distinct_from(chain.c.reached), sh.left_at.is_distinct_from(chain.c.next_at)))
        .values(left_at=chain.c.next_at, top=chain.c.reached, stay=seconds_between(dialect, chain.c.next_at, sh.at))
    )
