"""Rows for read-side and feedback tests, written straight into the tables (no pipeline needed).

    async with db.transaction() as conn:
        lead = await add_lead(conn, email="jane@acme.com", stage="sql", owner="anna", team="emea")
        await add_assignment(conn, lead, rep_id="anna", team="emea", assigned_at=T0)
        await add_sla(conn, lead, assignment_id=f"asg-{lead}", rep_id="anna", due_at=T0 + timedelta(hours=4))

    async with sales_api(database_url, token="t1,t2") as (client, container):
        r = await client.get("/v1/leads", headers=bearer("t1"))

``sales_api`` mounts exactly the sales-facing routers (leads, feedback, reps, and the demo inbox when
``demo=True``) on a real container, so these tests do not depend on the other read-side modules.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

from services.api import demo, feedback, leads, reps
from services.config import HandoffConfig, load_config
from services.db import models
from services.http.app import create_app
from services.runtime import Container, ServicePart, bootstrap
from services.stage_chain import refresh_stage_chain
from tests.support.app import test_settings

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def add_lead(
    conn: AsyncConnection,
    *,
    id: str | None = None,
    email: str | None = None,
    stage: str = "engaged",
    created_at: datetime = T0,
    owner: str | None = None,
    team: str | None = None,
    source: str | None = "website",
    campaign: str | None = None,
    fit: float = 0,
    engagement: float = 0,
    traits: Mapping[str, Any] | None = None,
    score_state: Mapping[str, Any] | None = None,
    score: Mapping[str, Any] | None = None,
    company_domain: str | None = None,
    qualified_at: datetime | None = None,
    assigned_at: datetime | None = None,
    contacted_at: datetime | None = None,
    stage_changed_at: datetime | None = None,
    merged_into: str | None = None,
) -> str:
    """One ``leads`` row (plus its email identity); returns the id."""
    lead_id = id or uuid.uuid4().hex
    await conn.execute(models.leads.insert().values(
        id=lead_id, stage=stage, email=email, company_domain=company_domain, fit=fit, engagement=engagement,
        total=fit + engagement, traits=dict(traits or {}), score_state=dict(score_state or {}),
        score=dict(score) if score is not None else None,
        source=source, campaign=campaign, owner=owner, team=team, merged_into=merged_into,
        created_at=created_at, updated_at=created_at, stage_changed_at=stage_changed_at or created_at,
        qualified_at=qualified_at, assigned_at=assigned_at, contacted_at=contacted_at, version=0,
    ))
    if email:
        await add_identity(conn, lead_id, "email", email, created_at)
    return lead_id


async def add_identity(conn: AsyncConnection, lead_id: str, kind: str, value: str, at: datetime = T0) -> None:
    row = {"kind": kind, "value": value, "lead_id": lead_id, "linked_at": at}
    await conn.execute(models.lead_identities.insert().values(**row))


async def add_touchpoint(
    conn: AsyncConnection,
    lead_id: str,
    *,
    event_id: str,
    type: str,
    occurred_at: datetime,
    source: str = "website",
    campaign: str | None = None,
    properties: Mapping[str, Any] | None = None,
    traits: Mapping[str, Any] | None = None,
    email: str | None = None,
) -> None:
    payload = {"event_id": event_id, "type": type, "occurred_at": occurred_at.isoformat(),
               "received_at": occurred_at.isoformat(), "source": source, "campaign": campaign,
               "email": email, "properties": dict(properties or {}), "traits": dict(traits or {})}
    await conn.execute(models.touchpoints.insert().values(
        event_id=event_id, lead_id=lead_id, type=type, occurred_at=occurred_at, source=source,
        campaign=campaign, payload=payload,
    ))


async def add_history(
    conn: AsyncConnection, lead_id: str, from_stage: str | None, to_stage: str, at: datetime, cause: str
) -> None:
    await conn.execute(models.stage_history.insert().values(
        lead_id=lead_id, from_stage=from_stage, to_stage=to_stage, at=at, cause=cause))
    await refresh_stage_chain(conn, [lead_id])


async def add_assignment(
    conn: AsyncConnection,
    lead_id: str,
    *,
    rep_id: str | None,
    team: str | None,
    assigned_at: datetime,
    id: str | None = None,
    reason: str = "round robin in team emea",
    ended_at: datetime | None = None,
    end_reason: str | None = None,
) -> str:
    assignment_id = id or f"asg-{uuid.uuid4().hex[:12]}"
    await conn.execute(models.assignments.insert().values(
        id=assignment_id, lead_id=lead_id, rep_id=rep_id, team=team, reason=reason, assigned_at=assigned_at,
        ended_at=ended_at, end_reason=end_reason,
    ))
    return assignment_id


async def add_sla(
    conn: AsyncConnection,
    lead_id: str,
    *,
    assignment_id: str,
    rep_id: str | None,
    due_at: datetime,
    started_at: datetime,
    state: str = "running",
    reminders_sent: int = 0,
    breached_at: datetime | None = None,
) -> None:
    await conn.execute(models.lead_sla.insert().values(
        lead_id=lead_id, assignment_id=assignment_id, rep_id=rep_id, due_at=due_at, state=state,
        reminders_sent=reminders_sent, breached_at=breached_at, paged=False, started_at=started_at,
    ))


async def add_timer(
    conn: AsyncConnection, lead_id: str, *, assignment_id: str, kind: str, due_at: datetime,
    fire_at: datetime, status: str = "pending", rep_id: str | None = None,
) -> None:
    await conn.execute(models.sla_timers.insert().values(
        lead_id=lead_id, assignment_id=assignment_id, rep_id=rep_id, kind=kind,
        fraction=None if kind == "breach" else 0.5, due_at=due_at, fire_at=fire_at, status=status,
    ))


async def add_handed_lead(
    conn: AsyncConnection,
    *,
    email: str,
    rep_id: str = "anna",
    team: str = "emea",
    assigned_at: datetime,
    due_at: datetime,
    stage: str = "sql",
) -> tuple[str, str]:
    """A lead the router handed to ``rep_id``: stage sql, an assignment, a running SLA clock with a
    pending reminder and breach timer, and its history. Returns ``(lead_id, assignment_id)``."""
    lead = await add_lead(conn, email=email, stage=stage, owner=rep_id, team=team,
                          created_at=assigned_at - timedelta(days=2), qualified_at=assigned_at,
                          assigned_at=assigned_at, stage_changed_at=assigned_at)
    await add_history(conn, lead, "engaged", "mql", assigned_at, "qualified: fit 20 >= 10, engagement 45")
    await add_history(conn, lead, "mql", "sql", assigned_at, f"assigned to {rep_id}")
    assignment_id = await add_assignment(conn, lead, rep_id=rep_id, team=team, assigned_at=assigned_at)
    await add_sla(conn, lead, assignment_id=assignment_id, rep_id=rep_id, due_at=due_at,
                  started_at=assigned_at)
    half = assigned_at + (due_at - assigned_at) / 2
    await add_timer(conn, lead, assignment_id=assignment_id, kind="reminder", due_at=due_at, fire_at=half,
                    rep_id=rep_id)
    await add_timer(conn, lead, assignment_id=assignment_id, kind="breach", due_at=due_at, fire_at=due_at,
                    rep_id=rep_id)
    return lead, assignment_id


@asynccontextmanager
async def sales_api(
    database_url: str,
    *,
    token: str | None = "test-token",
    config: HandoffConfig | None = None,
    demo_mode: bool = False,
) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    """An in-process client for the sales-facing routes on a real database and embedded bus."""
    settings = test_settings(database_url, token)
    container = await bootstrap(settings, frozenset(), config=config or load_config(None), demo=demo_mode)
    part = ServicePart(name="api", routers=[leads.build_router(), feedback.build_router(),
                                            reps.build_router()])
    if demo_mode:
        part.routers.append(demo.build_router())
    container.parts["api"] = part
    transport = httpx.ASGITransport(app=create_app(container))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, container
    finally:
        await container.close()
