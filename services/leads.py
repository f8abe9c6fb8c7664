"""Reading leads: identities, merges, score breakdowns and the lead list (``GET /v1/leads``).

::

    async with db.read() as conn:
        ids = await find_lead_ids(conn, email=" Jane.Doe@Acme.com ")               # ["3f2a..."]
        page, next_key = await list_lead_summaries(conn, LeadFilters(stages=("sql",)), limit=50)
        cursor = encode_cursor(next_key) if next_key else None

A merged lead (the loser of an identity merge) resolves to the lead it was merged into. The whole lead
document (``GET /v1/leads/{id}``, the CRM push) is built by :mod:`services.lead_documents`.
Times are ISO 8601 strings in UTC with ``Z``.

This module reads the JSON that ``scoring`` stores in ``leads.score_state`` by its keys; it never
imports ``scoring`` (services is the kernel every service depends on, not the other way round).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from services.db.dialect import lock
from services.db.models import lead_identities, leads
from services.decay import decayed, per_second
from services.stages import STAGES

__all__ = ["STAGES", "LeadFilters", "PageKey", "decode_cursor", "encode_cursor", "find_lead_ids",
           "iso", "lead_summary", "list_lead_summaries", "normalise_email",
           "resolve_lead_ids", "resolve_lead_map", "score_breakdown"]

# Merge chains are short (a merge points at the winner of the moment); the bound only stops a cycle.
MAX_MERGE_HOPS = 16
# Trait keys the derived company_domain comes from (a fit rule on it dates from their last write).
Row = Mapping[Any, Any]  # a result row's mapping


def iso(at: datetime | None) -> str | None:
    """``2026-11-22T10:00:00Z``: UTC with ``Z``, as every time in the API is shown."""
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def normalise_email(email: str) -> str:
    """Identity form of an email: trimmed and lower-cased (as ingest and scoring store it)."""
    return email.strip().lower()


def _number(value: Any) -> float:
    try:
        return round(float(value), 2)
    except (TypeError, ValueError):
        return 0.0


# ---------------------------------------------------------------- merges and identities
async def resolve_row(conn: AsyncConnection, lead_id: str, *, for_update: bool = False) -> Row | None:
    """The lead row of ``lead_id``, following ``merged_into`` to the surviving lead; with ``for_update``
    each row read is locked for the transaction (PostgreSQL)."""
    seen: set[str] = set()
    current = lead_id
    row: Row | None = None
    for _ in range(MAX_MERGE_HOPS):
        query = select(leads).where(leads.c.id == current)
        row = (await conn.execute(lock(conn, query) if for_update else query)).mappings().first()
        if row is None:
            return None
        target = row["merged_into"]
        if not target or target in seen or target == current:
            return row
        seen.add(current)
        current = target
    return row


async def resolve_lead_ids(conn: AsyncConnection, lead_ids: Iterable[str]) -> list[str]:
    """Each id replaced by the lead it was merged into (if any); unknown ids dropped; order kept, deduped."""
    wanted = list(dict.fromkeys(lead_ids))
    final = await resolve_lead_map(conn, wanted)
    return list(dict.fromkeys(final[i] for i in wanted if i in final))


async def resolve_lead_map(conn: AsyncConnection, lead_ids: Sequence[str]) -> dict[str, str]:
    """Each known id -> the lead it resolves to, following ``merged_into`` as :func:`resolve_row` does
    (to the survivor, stopping at a cycle), for many ids at once: a query per hop, not per id.
    Unknown ids, and merges into a lead that is gone, are left out."""
    paths = {lead_id: [lead_id] for lead_id in lead_ids}  # each id's hops so far
    final: dict[str, str] = {}
    for _ in range(MAX_MERGE_HOPS):
        pending = {original: hops[-1] for original, hops in paths.items() if original not in final}
        if not pending:
            break
        merged = dict((await conn.execute(select(leads.c.id, leads.c.merged_into)  # type: ignore[arg-type]
                                          .where(leads.c.id.in_(sorted(set(pending.values())))))).all())
        for original, hop in pending.items():
            if hop not in merged:
                del paths[original]
                continue
            target = merged[hop]
            if not target or target in paths[original]:  # the survivor (or a cycle: stop there)
                final[original] = hop
            else:
                paths[original].append(target)
    for original, hops in paths.items():
        if original not in final:  # a chain longer than the bound: the last lead read
            final[original] = hops[-2]
    return final


async def find_lead_ids(
    conn: AsyncConnection,
    *,
    email: str | None = None,
    user_id: str | None = None,
    anonymous_id: str | None = None,
) -> list[str]:
    """Leads known by any of the given identities (emails normalised), merged ids resolved, deduped."""
    wanted = [("email", normalise_email(email) if email else ""), ("user", (user_id or "").strip()),
              ("anon", (anonymous_id or "").strip())]
    conditions = [and_(lead_identities.c.kind == kind, lead_identities.c.value == value)
                  for kind, value in wanted if value]
    if not conditions:
        return []
    ids = (await conn.execute(
        select(lead_identities.c.lead_id).where(or_(*conditions)).order_by(lead_identities.c.linked_at)
    )).scalars().all()
    if not ids and email is not None and normalise_email(email):
        # A lead whose primary email was recorded before any identity row (or by an older writer).
        ids = (await conn.execute(
            select(leads.c.id).where(leads.c.email == normalise_email(email))
        )).scalars().all()
    return await resolve_lead_ids(conn, ids)


# ---------------------------------------------------------------- score breakdown
def score_breakdown(stored_score: Any, score_state: Any) -> list[dict[str, Any]]:
    """``[{rule, kind, points, decayed_points, event_id, at}]``: fit lines first, then one line per
    engagement item of the score state (oldest first) with its points decayed to the instant the lead
    was scored, as scoring summed them into ``engagement``.

    Scoring stores the fit lines and that instant (``leads.score``: ``fit_breakdown``, ``decayed_at``,
    ``half_life_days``; ``scoring.rules.Score.stored_json``); a score stored whole (``breakdown``, by
    ``handoff rescore`` and by earlier versions) is shown as stored; with neither, the engagement items
    are shown undecayed."""
    stored = stored_score if isinstance(stored_score, Mapping) else {}
    if isinstance(stored.get("breakdown"), list):
        return [dict(line) for line in stored["breakdown"] if isinstance(line, Mapping)]
    lines = [dict(line) for line in stored.get("fit_breakdown") or [] if isinstance(line, Mapping)]
    now, rate = _decay_of(stored)
    state = score_state if isinstance(score_state, Mapping) else {}
    for item in state.get("engagement_items") or []:
        if not isinstance(item, Mapping):
            continue
        raw = item.get("points")
        points = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else 0.0
        text = item.get("at")
        at = _time_or_none(text)
        if now is not None and at is not None:
            worth = decayed(points, (now - at).total_seconds(), rate)
        else:
            worth = points
        lines.append({"rule": item.get("rule"), "kind": "engagement", "points": round(points, 2),
                      "decayed_points": round(worth, 2), "event_id": item.get("event_id"),
                      "at": iso(at) if at is not None else text})
    return lines


def _decay_of(stored: Mapping[str, Any]) -> tuple[datetime | None, float]:
    """When the stored score decayed its engagement, and at what rate; (None, 0.0) if it does not say."""
    at = _time_or_none(stored.get("decayed_at"))
    half_life = stored.get("half_life_days")
    if at is None or not isinstance(half_life, int | float) or isinstance(half_life, bool):
        return None, 0.0
    return at, per_second(float(half_life))


def _time_or_none(text: Any) -> datetime | None:
    """An aware time from stored ISO text (``Z`` or an offset), or None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


# ---------------------------------------------------------------- lists
@dataclass(frozen=True)
class LeadFilters:
    """What a lead list is narrowed by; ``*_from`` bounds are inclusive, ``*_to`` exclusive."""

    stages: tuple[str, ...] = ()
    owner: str | None = None
    team: str | None = None
    source: str | None = None
    campaign: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    qualified_from: datetime | None = None
    qualified_to: datetime | None = None
    ids: tuple[str, ...] | None = None  # only these leads (an identity lookup)

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = [leads.c.merged_into.is_(None)]
        if self.stages:
            where.append(leads.c.stage.in_(self.stages))
        for column, value in ((leads.c.owner, self.owner), (leads.c.team, self.team),
                              (leads.c.source, self.source), (leads.c.campaign, self.campaign)):
            if value is not None:
                where.append(column == value)
        if self.created_from is not None:
            where.append(leads.c.created_at >= self.created_from)
        if self.created_to is not None:
            where.append(leads.c.created_at < self.created_to)
        if self.qualified_from is not None:
            where.append(leads.c.qualified_at >= self.qualified_from)
        if self.qualified_to is not None:
            where.append(leads.c.qualified_at < self.qualified_to)
        if self.ids is not None:
            where.append(leads.c.id.in_(self.ids))
        return where


@dataclass(frozen=True)
class PageKey:
    """Where a page ends: lists are ordered newest first by (created_at, id)."""

    created_at: datetime
    id: str


def encode_cursor(key: PageKey) -> str:
    """An opaque, URL-safe cursor for the page after ``key``."""
    raw = orjson.dumps({"c": key.created_at.astimezone(UTC).isoformat(), "i": key.id})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> PageKey:
    """Read a cursor made by :func:`encode_cursor`; ``ValueError`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
        created = datetime.fromisoformat(data["c"])
        lead_id = data["i"]
    except (binascii.Error, ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        raise ValueError("the cursor is not one this API issued; use next_cursor from the previous page "
                         "as it is, or leave it out to start from the first page") from None
    if not isinstance(lead_id, str) or created.tzinfo is None:
        raise ValueError("the cursor is not one this API issued; leave it out to start from the first page")
    return PageKey(created.astimezone(UTC), lead_id)


def lead_summary(row: Row) -> dict[str, Any]:
    """One item of a lead list (the whole document is at ``GET /v1/leads/{id}``)."""
    return {
        "id": row["id"],
        "email": row["email"],
        "company_domain": row["company_domain"],
        "stage": row["stage"],
        "owner": row["owner"],
        "team": row["team"],
        "score": {"fit": _number(row["fit"]), "engagement": _number(row["engagement"]),
                  "total": _number(row["total"])},
        "source": row["source"],
        "campaign": row["campaign"],
        "created_at": iso(row["created_at"]),
        "qualified_at": iso(row["qualified_at"]),
        "assigned_at": iso(row["assigned_at"]),
        "contacted_at": iso(row["contacted_at"]),
        "stage_changed_at": iso(row["stage_changed_at"]),
    }


_SUMMARY_COLUMNS: Sequence[Any] = (
    leads.c.id, leads.c.email, leads.c.company_domain, leads.c.stage, leads.c.owner, leads.c.team,
    leads.c.fit, leads.c.engagement, leads.c.total, leads.c.source, leads.c.campaign, leads.c.created_at,
    leads.c.qualified_at, leads.c.assigned_at, leads.c.contacted_at, leads.c.stage_changed_at,
)


async def _page_rows(
    conn: AsyncConnection, filters: LeadFilters, *, limit: int, after: PageKey | None = None
) -> tuple[list[Row], PageKey | None]:
    """Up to ``limit`` summary rows matching ``filters`` after ``after``, and the key of the next page
    (None on the last page). Keyset pagination: stable while leads are added, O(limit) per page."""
    where = filters.conditions()
    if after is not None:
        where.append(or_(leads.c.created_at < after.created_at,
                         and_(leads.c.created_at == after.created_at, leads.c.id < after.id)))
    rows = (await conn.execute(
        select(*_SUMMARY_COLUMNS).where(*where)
        .order_by(leads.c.created_at.desc(), leads.c.id.desc())
        .limit(limit + 1)
    )).mappings().all()
    page: list[Row] = list(rows[:limit])
    next_key = PageKey(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit and page else None
    return page, next_key


async def list_lead_summaries(
    conn: AsyncConnection, filters: LeadFilters, *, limit: int, after: PageKey | None = None
) -> tuple[list[dict[str, Any]], PageKey | None]:
    """A page of :func:`lead_summary` items and the key of the next page (None on the last)."""
    rows, next_key = await _page_rows(conn, filters, limit=limit, after=after)
    return [lead_summary(r) for r in rows], next_key
