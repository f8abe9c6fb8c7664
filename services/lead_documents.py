"""The lead document (``GET /v1/leads/{id}``, the CRM push): the lead with its whole journey.

::

    async with db.read() as conn:
        lead = await load_lead_document(conn, "3f2a...")             # None: unknown id
        docs = await load_lead_documents(conn, ["3f2a...", "9c1b..."])  # {id: document or None}

A merged lead (the loser of an identity merge) resolves to the lead it was merged into, and a lead's
document includes the touchpoints and identities of the leads merged into it. Documents are built with
a fixed number of queries (leads, merged-away ids, identities, stage history, timeline, assignments,
SLA) per call, whatever the number or size of the leads: the notifier builds one for every CRM push,
a batch of pushes at a time. Times are ISO 8601 strings in UTC with ``Z``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import BindParameter, Select, bindparam, exists, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.db.models import assignments, lead_identities, lead_sla, leads, stage_history, touchpoints
from services.leads import MAX_MERGE_HOPS, Row, _number, iso, resolve_lead_map, score_breakdown

__all__ = ["load_lead_document", "load_lead_documents"]


async def load_lead_document(conn: AsyncConnection, lead_id: str, *,
                             timeline_limit: int = 500) -> dict[str, Any] | None:
    """The contract's lead document, or None when no lead has this id.

    ``timeline_limit`` keeps the newest touchpoints (shown oldest first, newest last);
    ``touchpoints_total`` says how many there are.
    """
    return (await load_lead_documents(conn, [lead_id], timeline_limit=timeline_limit))[lead_id]


async def load_lead_documents(conn: AsyncConnection, lead_ids: Iterable[str], *,
                              timeline_limit: int = 500) -> dict[str, dict[str, Any] | None]:
    """Each requested id's document (None for an unknown id), all read in one set of queries."""
    requested = list(dict.fromkeys(lead_ids))
    # The requested leads are read whole at once: most are their own survivors (never merged away),
    # and only the others need resolving, then their survivors' rows (a query less in the usual case).
    rows = await _lead_rows(conn, requested)
    winner_of = {lead_id: lead_id for lead_id, row in rows.items() if not row["merged_into"]}
    merged_away = [lead_id for lead_id, row in rows.items() if row["merged_into"]]
    if merged_away:
        winner_of |= await resolve_lead_map(conn, merged_away)
        rows |= await _lead_rows(conn, sorted(set(winner_of.values()) - rows.keys()))
    winners = sorted(set(winner_of.values()))
    if not winners:
        return dict.fromkeys(requested)
    # Only a lead that others were merged into needs the walk through them; the lead rows say which (most
    # leads never had one merged into them: the walk's first query, on every CRM push, was for nothing).
    merged_from = await _merged_away(conn, [w for w in winners if w not in rows or rows[w][HAS_MERGED]])
    root = {winner: winner for winner in winners} | {loser: w for w, losers in merged_from.items() for loser in losers}
    own_ids = sorted(root)

    queries = _queries()
    identities: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for lead_id, kind, value in (await conn.execute(queries.identities, {"ids": own_ids})).all():
        identities[root[lead_id]].append((kind, value))
    history = _by_lead(await conn.execute(queries.history, {"ids": winners}))
    timelines, totals = await _timelines(conn, own_ids, root, max(1, timeline_limit))
    assignment_rows = _by_lead(await conn.execute(queries.assignments, {"ids": winners}))
    slas = {row["lead_id"]: row for row in (await conn.execute(queries.slas, {"ids": winners})).mappings()}

    documents = {
        winner: _document(rows[winner], merged_from.get(winner, []), identities[winner], history[winner],
                          timelines[winner], totals[winner], assignment_rows[winner], slas.get(winner))
        for winner in winners if winner in rows
    }
    return {lead_id: documents.get(winner_of[lead_id]) if lead_id in winner_of else None
            for lead_id in requested}


class _Queries:
    """The document's queries, built once: building them took about a millisecond per call, and the
    notifier calls this for every round of CRM pushes. Each takes its lead ids as ``ids`` (a list)."""

    def __init__(self) -> None:
        ids: BindParameter[Any] = bindparam("ids", expanding=True)
        merged = leads.alias("merged")
        self.leads: Select[Any] = select(
            leads, exists().where(merged.c.merged_into == leads.c.id).label(HAS_MERGED)).where(leads.c.id.in_(ids))
        self.merged_into: Select[Any] = select(leads.c.id, leads.c.merged_into).where(leads.c.merged_into.in_(ids))
        self.identities: Select[Any] = (
            select(lead_identities.c.lead_id, lead_identities.c.kind, lead_identities.c.value)
            .where(lead_identities.c.lead_id.in_(ids)).order_by(lead_identities.c.linked_at, lead_identities.c.value))
        self.history: Select[Any] = select(stage_history).where(stage_history.c.lead_id.in_(ids)).order_by(
            stage_history.c.lead_id, stage_history.c.at, stage_history.c.id)
        self.assignments: Select[Any] = select(assignments).where(assignments.c.lead_id.in_(ids)).order_by(
            assignments.c.lead_id, assignments.c.assigned_at, assignments.c.id)
        self.slas: Select[Any] = select(lead_sla).where(lead_sla.c.lead_id.in_(ids))
        newest = func.row_number().over(partition_by=touchpoints.c.lead_id,
                                        order_by=(touchpoints.c.occurred_at.desc(), touchpoints.c.event_id.desc()))
        ranked = select(touchpoints, newest.label("newest"),
                        func.count().over(partition_by=touchpoints.c.lead_id).label("total")
                        ).where(touchpoints.c.lead_id.in_(ids)).subquery()
        self.timelines: Select[Any] = select(ranked).where(ranked.c.newest <= bindparam("limit"))


HAS_MERGED = "has_merged_leads"  # a column of the lead rows read here: some lead was merged into this one


@cache
def _queries() -> _Queries:
    return _Queries()


async def _lead_rows(conn: AsyncConnection, lead_ids: Sequence[str]) -> dict[str, Row]:
    if not lead_ids:
        return {}
    return {row["id"]: row for row in (await conn.execute(_queries().leads, {"ids": list(lead_ids)})).mappings()}


async def _merged_away(conn: AsyncConnection, winners: Sequence[str]) -> dict[str, list[str]]:
    """Each winner's merged-away leads (directly or through a chain)."""
    found: dict[str, list[str]] = defaultdict(list)
    if not winners:
        return {}
    frontier = {winner: winner for winner in winners}  # lead -> the winner it leads back to
    for _ in range(MAX_MERGE_HOPS):
        rows = (await conn.execute(_queries().merged_into, {"ids": sorted(frontier)})).all()
        following: dict[str, str] = {}
        for lead_id, into in rows:
            winner = frontier[into]
            if lead_id != winner and lead_id not in found[winner]:
                found[winner].append(lead_id)
                following[lead_id] = winner
        if not following:
            break
        frontier = following
    return dict(found)


async def _timelines(conn: AsyncConnection, own_ids: Sequence[str], root: Mapping[str, str],
                     limit: int) -> tuple[dict[str, list[Row]], dict[str, int]]:
    """Each winner's newest ``limit`` touchpoints (oldest first) and how many it has in all."""
    rows = (await conn.execute(_queries().timelines, {"ids": list(own_ids), "limit": limit})).mappings().all()
    timelines: dict[str, list[Row]] = defaultdict(list)
    totals: dict[str, int] = defaultdict(int)
    counted: set[str] = set()
    for row in rows:
        winner = root[row["lead_id"]]
        timelines[winner].append(row)
        if row["lead_id"] not in counted:
            counted.add(row["lead_id"])
            totals[winner] += int(row["total"])
    for timeline in timelines.values():
        # Merged leads' touchpoints interleave: keep the newest ``limit`` of all of them, oldest first.
        timeline.sort(key=lambda t: (t["occurred_at"], t["event_id"]))
        del timeline[:-limit]
    return timelines, totals


def _touchpoint(row: Row) -> dict[str, Any]:
    payload = row["payload"] if isinstance(row["payload"], Mapping) else {}
    properties = payload.get("properties")
    traits = payload.get("traits")
    return {
        "event_id": row["event_id"],
        "type": row["type"],
        "occurred_at": iso(row["occurred_at"]),
        "source": row["source"],
        "campaign": row["campaign"],
        "properties": properties if isinstance(properties, Mapping) else {},
        "traits": traits if isinstance(traits, Mapping) else {},
        "email": payload.get("email"),
        "user_id": payload.get("user_id"),
        "anonymous_id": payload.get("anonymous_id"),
    }


def _assignment(row: Row) -> dict[str, Any]:
    return {
        "assignment_id": row["id"],
        "rep_id": row["rep_id"],
        "team": row["team"],
        "reason": row["reason"],
        "assigned_at": iso(row["assigned_at"]),
        "ended_at": iso(row["ended_at"]),
        "end_reason": row["end_reason"],
    }


def _by_lead(result: Any) -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = defaultdict(list)
    for row in result.mappings():
        grouped[row["lead_id"]].append(row)
    return grouped


def _document(row: Row, merged_from: list[str], identity_rows: list[tuple[str, str]], history_rows: list[Row],
              timeline_rows: list[Row], total_touchpoints: int, assignment_rows: list[Row],
              sla_row: Row | None) -> dict[str, Any]:
    by_kind: dict[str, list[str]] = {"email": [], "user": [], "anon": []}
    for kind, value in identity_rows:
        if kind in by_kind and value not in by_kind[kind]:
            by_kind[kind].append(value)
    primary = row["email"]
    if primary:
        by_kind["email"] = [primary, *(e for e in by_kind["email"] if e != primary)]
    current = next((a for a in reversed(assignment_rows) if a["ended_at"] is None), None)
    traits = row["traits"] if isinstance(row["traits"], Mapping) else {}
    assignment = None
    if current is not None:
        assignment = {k: v for k, v in _assignment(current).items() if k not in ("ended_at", "end_reason")}
    sla = None
    if sla_row is not None:
        sla = {
            "due_at": iso(sla_row["due_at"]),
            "state": sla_row["state"],
            "reminders_sent": sla_row["reminders_sent"],
            "breached_at": iso(sla_row["breached_at"]),
            "assignment_id": sla_row["assignment_id"],
            "rep_id": sla_row["rep_id"],
            "started_at": iso(sla_row["started_at"]),
            "stopped_at": iso(sla_row["stopped_at"]),
        }
    return {
        "id": row["id"],
        "email": primary,
        "emails": by_kind["email"],
        "user_ids": by_kind["user"],
        "anonymous_ids": by_kind["anon"],
        "company_domain": row["company_domain"],
        "traits": dict(traits),
        "score": {
            "fit": _number(row["fit"]),
            "engagement": _number(row["engagement"]),
            "total": _number(row["total"]),
            "breakdown": score_breakdown(row["score"], row["score_state"]),
        },
        "stage": row["stage"],
        "stage_changed_at": iso(row["stage_changed_at"]),
        "stage_history": [
            {"from": h["from_stage"], "to": h["to_stage"], "at": iso(h["at"]), "cause": h["cause"]}
            for h in history_rows
        ],
        "touchpoints": [_touchpoint(t) for t in timeline_rows],
        "touchpoints_total": total_touchpoints,
        "assignment": assignment,
        "assignment_history": [_assignment(a) for a in assignment_rows],
        "sla": sla,
        "owner": row["owner"],
        "team": row["team"],
        "source": row["source"],
        "campaign": row["campaign"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "qualified_at": iso(row["qualified_at"]),
        "assigned_at": iso(row["assigned_at"]),
        "contacted_at": iso(row["contacted_at"]),
        "merged_into": row["merged_into"],
        "merged_from": merged_from,
    }
