"""``GET /v1/leads/{lead_id}`` and ``GET /v1/leads`` (identity lookup, or a filtered, paginated list).

::

    GET /v1/leads/3f2a...                       -> the lead document (services.leads)
    GET /v1/leads?email=Jane.Doe@Acme.com       -> {"items": [<lead document>], "next_cursor": null}
    GET /v1/leads?stage=sql,contacted&owner=anna&created_from=2026-11-01&limit=50
                                                -> {"items": [<summary>, ...], "next_cursor": "eyJj..."}
    GET /v1/leads?stage=sql&cursor=eyJj...      -> the next page (same filters)

Lists are newest first by ``created_at``; pass ``next_cursor`` back as ``cursor`` until it is null.
Merged-away leads never appear in lists (their id still opens the lead they were merged into).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.http.auth import RequireToken
from services.http.deps import ContainerDep
from services.http.errors import ApiError
from services.http.links import LEAD_LINKS, LIST_LINKS, ok_links
from services.http.params import parse_time_param
from services.lead_documents import load_lead_document, load_lead_documents
from services.leads import (
    STAGES,
    LeadFilters,
    PageKey,
    decode_cursor,
    encode_cursor,
    find_lead_ids,
    list_lead_summaries,
)

MAX_LIMIT = 200


def _invalid(field: str, message: str) -> ApiError:
    details = [{"field": field, "message": message}]
    return ApiError(422, "invalid_payload", f"invalid fields: {field}", details)


def parse_stages(value: str | None) -> tuple[str, ...]:
    """``MQL`` or ``sql,contacted`` -> lower-case stage names, each checked against the funnel's."""
    if value is None or not value.strip():
        return ()
    stages = tuple(dict.fromkeys(s.strip().lower() for s in value.split(",") if s.strip()))
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise _invalid("stage", f"unknown stage(s) {', '.join(unknown)}; stages are: {', '.join(STAGES)} "
                                "(several separated by commas)")
    return stages


def _text(value: str | None) -> str | None:
    return value.strip() if value is not None and value.strip() else None


def build_router() -> APIRouter:
    router = APIRouter(tags=["leads"], dependencies=[RequireToken])

    @router.get(
        "/v1/leads/{lead_id}", response_model=None, summary="One lead with its whole journey",
        responses={**ok_links(200, "The lead document", LEAD_LINKS), 404: {"description": "no lead with this id"}},
    )
    async def get_lead(lead_id: str, container: ContainerDep) -> dict[str, Any]:
        async with container.db.read() as conn:
            lead = await load_lead_document(conn, lead_id)
        if lead is None:
            raise ApiError(404, "lead_not_found",
                           f"no lead with id {lead_id!r}; look a lead up by email with "
                           "GET /v1/leads?email=<address>, or list leads with GET /v1/leads")
        return lead

    @router.get(
        "/v1/leads", response_model=None, summary="Find leads by identity, or list them with filters",
        responses={**ok_links(200, "A page of leads", LIST_LINKS),
                   422: {"description": "a bad filter, limit or cursor"}},
    )
    async def list_leads(
        container: ContainerDep,
        email: Annotated[str | None, Query(description="look up by email (any case)")] = None,
        user_id: Annotated[str | None, Query(description="look up by the sender's user id")] = None,
        anonymous_id: Annotated[str | None, Query(description="look up by anonymous id")] = None,
        stage: Annotated[str | None, Query(description="stage(s), e.g. sql,contacted")] = None,
        owner: Annotated[str | None, Query(description="the assigned rep's id")] = None,
        team: str | None = None,
        source: Annotated[str | None, Query(description="first-touch source")] = None,
        campaign: Annotated[str | None, Query(description="first-touch campaign")] = None,
        created_from: Annotated[str | None, Query(description="inclusive; date or ISO time")] = None,
        created_to: Annotated[str | None, Query(description="exclusive; date or ISO time")] = None,
        qualified_from: Annotated[str | None, Query(description="MQL time, inclusive")] = None,
        qualified_to: Annotated[str | None, Query(description="MQL time, exclusive")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> dict[str, Any]:
        filters = LeadFilters(
            stages=parse_stages(stage), owner=_text(owner), team=_text(team), source=_text(source),
            campaign=_text(campaign),
            created_from=parse_time_param("created_from", created_from),
            created_to=parse_time_param("created_to", created_to),
            qualified_from=parse_time_param("qualified_from", qualified_from),
            qualified_to=parse_time_param("qualified_to", qualified_to),
        )
        after: PageKey | None = None
        if cursor is not None and cursor.strip():
            try:
                after = decode_cursor(cursor.strip())
            except ValueError as exc:
                raise _invalid("cursor", str(exc)) from None
        lookup = any(_text(v) for v in (email, user_id, anonymous_id))
        async with container.db.read() as conn:
            if lookup:
                ids = await find_lead_ids(conn, email=_text(email), user_id=_text(user_id),
                                          anonymous_id=_text(anonymous_id))
                filters = replace(filters, ids=tuple(ids))
            items, next_key = await list_lead_summaries(conn, filters, limit=limit, after=after)
            if lookup:
                # An identity lookup answers whole documents: it is how a lead is opened by email.
                docs = await load_lead_documents(conn, [item["id"] for item in items])
                items = [doc for doc in (docs[item["id"]] for item in items) if doc is not None]
        return {"items": items, "next_cursor": encode_cursor(next_key) if next_key else None}

    return router
