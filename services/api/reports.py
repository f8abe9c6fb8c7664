"""``GET /v1/reports/funnel``: the funnel report (bearer token), computed in SQL by :mod:`services.reports`.

::

    GET /v1/reports/funnel                                  -> every lead, all time
    GET /v1/reports/funnel?from=2026-11-01&to=2026-12-01    -> stage changes in November (UTC)
    GET /v1/reports/funnel?group_by=campaign                -> plus the same figures per campaign

``from`` (inclusive) and ``to`` (exclusive) are dates (midnight UTC) or ISO 8601 times; a bad value, a
``to`` not after ``from``, or an unknown ``group_by`` is a 422 naming the parameter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.events import utcnow
from services.http.auth import RequireToken
from services.http.deps import ContainerDep
from services.http.params import invalid_param, parse_time_param
from services.reports import GROUP_BY, Connect, funnel_report
from services.runtime import Container


def parse_window(start: str | None, end: str | None) -> tuple[datetime | None, datetime | None]:
    begin, finish = parse_time_param("from", start), parse_time_param("to", end)
    if begin is not None and finish is not None and finish <= begin:
        raise invalid_param("to", f"must be after from ({begin.isoformat()}); the window is from <= t < to")
    return begin, finish


def parse_group_by(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    choice = value.strip().lower()
    if choice not in GROUP_BY:
        raise invalid_param("group_by", f"{value!r} is not one of {', '.join(GROUP_BY)}")
    return choice


def parallel_reads(container: Container) -> Connect | None:
    """PostgreSQL serves the report's queries side by side from the pool; SQLite in turn."""
    return container.db.read if container.db.is_postgres else None


def build_router() -> APIRouter:
    router = APIRouter(tags=["reports"], dependencies=[RequireToken])

    @router.get(
        "/v1/reports/funnel", response_model=None, summary="The funnel: stages, conversion, speed, SLA, leaks",
        description="Every figure is computed in SQL; see services/reports.py for their exact definitions.",
        responses={422: {"description": "a bad from/to or group_by"}},
    )
    async def funnel(
        container: ContainerDep,
        start: Annotated[str | None, Query(alias="from", description="inclusive; date or ISO time")] = None,
        end: Annotated[str | None, Query(alias="to", description="exclusive; date or ISO time")] = None,
        group_by: Annotated[str | None, Query(description="source | campaign | team | rep")] = None,
    ) -> dict[str, Any]:
        begin, finish = parse_window(start, end)
        grouping = parse_group_by(group_by)
        async with container.db.read() as conn:
            return await funnel_report(conn, container.config, start=begin, end=finish, group_by=grouping,
                                       now=utcnow(), connect=parallel_reads(container))

    return router
