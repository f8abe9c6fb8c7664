"""``GET /v1/reps`` (reps with load and availability) and ``PUT /v1/reps/{rep_id}`` (runtime overrides).

::

    GET /v1/reps                      -> {"items": [{"id": "anna", "capacity": 60, "available": true,
                                                     "open_leads": 3, "in_hours_now": true, ...}]}
    PUT /v1/reps/anna {"available": false}     -> anna is out of office: the router skips her
    PUT /v1/reps/anna {"capacity": 10}         -> at most 10 open leads
    PUT /v1/reps/anna {"available": null}      -> back to what the config says

Overrides live in ``rep_state`` (NULL = as configured) and take effect at the next assignment: the
router reads them. ``open_leads`` counts leads the rep owns at stage ``sql`` or ``contacted``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.config import WEEKDAYS, HandoffConfig, Rep
from services.db.dialect import upsert
from services.db.models import rep_state
from services.events import utcnow
from services.http.auth import RequireToken
from services.http.deps import ContainerDep
from services.http.errors import ApiError
from services.http.links import REP_LINKS, REPS_LINKS, ok_links
from services.rep_loads import open_lead_counts


class RepUpdate(BaseModel):
    """Body of ``PUT /v1/reps/{rep_id}``: give a field to override it, ``null`` to go back to the config."""

    model_config = ConfigDict(extra="forbid")

    available: bool | None = Field(default=None, description="false: out of office, gets no new leads")
    capacity: int | None = Field(default=None, ge=0, le=100000, description="most open leads at once")

    @model_validator(mode="after")
    def _something(self) -> RepUpdate:
        if not self.model_fields_set:
            raise ValueError("give 'available' and/or 'capacity' (null resets a field to the config's value)")
        return self


def in_hours(rep: Rep, now: datetime) -> bool:
    """Is ``now`` (aware) inside the rep's working hours and days, on the rep's own wall clock? Pure."""
    local = now.astimezone(ZoneInfo(rep.timezone))
    if WEEKDAYS[local.weekday()] not in rep.days:
        return False
    wall = local.time().replace(tzinfo=None)
    return rep.hours.start <= wall and (rep.hours.end is None or wall < rep.hours.end)


def rep_view(
    rep: Rep, config: HandoffConfig, override: Mapping[Any, Any] | None, open_leads: int, now: datetime
) -> dict[str, Any]:
    """A rep as the API shows it: the config, the effective availability and capacity, the load. Pure."""
    teams = [name for name, team in config.teams.items() if rep.id in team.reps]
    available = override.get("available") if override else None
    capacity = override.get("capacity") if override else None
    effective_capacity = rep.capacity if capacity is None else int(capacity)
    return {
        "id": rep.id,
        "name": rep.name,
        "email": rep.email,
        "timezone": rep.timezone,
        "hours": str(rep.hours),
        "days": list(rep.days),
        "team": teams[0] if teams else None,
        "teams": teams,
        "manager": rep.manager,
        "weight": rep.weight,
        "capacity": effective_capacity,
        "available": rep.available if available is None else bool(available),
        "open_leads": open_leads,
        "free_capacity": max(0, effective_capacity - open_leads),
        "in_hours_now": in_hours(rep, now),
        "overrides": {"available": available, "capacity": capacity},
        "configured": {"available": rep.available, "capacity": rep.capacity},
    }


async def _overrides(conn: AsyncConnection, rep_ids: list[str]) -> dict[str, Mapping[Any, Any]]:
    rows = (await conn.execute(select(rep_state).where(rep_state.c.rep_id.in_(rep_ids)))).mappings().all()
    return {row["rep_id"]: row for row in rows}


async def load_reps(conn: AsyncConnection, config: HandoffConfig, now: datetime) -> list[dict[str, Any]]:
    """Every configured rep with overrides and load (two queries, whatever the number of reps)."""
    ids = [rep.id for rep in config.reps]
    overrides = await _overrides(conn, ids)
    load = await open_lead_counts(conn, ids)
    return [rep_view(rep, config, overrides.get(rep.id), load.get(rep.id, 0), now) for rep in config.reps]


def _known_rep(config: HandoffConfig, rep_id: str) -> Rep:
    rep = config.rep(rep_id)
    if rep is None:
        known = ", ".join(r.id for r in config.reps) or "none configured"
        raise ApiError(404, "rep_not_found", f"no rep with id {rep_id!r} in the config (reps: {known}); "
                       "reps are added under 'reps' in the YAML config")
    return rep


def build_router() -> APIRouter:
    router = APIRouter(tags=["reps"], dependencies=[RequireToken])

    @router.get("/v1/reps", response_model=None, summary="Reps with their load and availability",
                responses=ok_links(200, "The configured reps", REPS_LINKS))
    async def list_reps(container: ContainerDep) -> dict[str, Any]:
        async with container.db.read() as conn:
            items = await load_reps(conn, container.config, utcnow())
        return {"items": items}

    @router.put(
        "/v1/reps/{rep_id}", response_model=None,
        summary="Set a rep out of office (available: false) or change their capacity",
        responses={**ok_links(200, "The rep with the new overrides", REP_LINKS),
                   404: {"description": "no such rep in the config"}},
    )
    async def update_rep(rep_id: str, body: RepUpdate, container: ContainerDep) -> dict[str, Any]:
        rep = _known_rep(container.config, rep_id)
        now = utcnow()
        async with container.db.transaction() as conn:
            current = (await _overrides(conn, [rep.id])).get(rep.id, {})
            given = body.model_fields_set  # a field left out keeps its override; null clears it
            row = {
                "rep_id": rep.id,
                "available": body.available if "available" in given else current.get("available"),
                "capacity": body.capacity if "capacity" in given else current.get("capacity"),
                "updated_at": now,
            }
            await conn.execute(upsert(conn, rep_state, ["rep_id"], ["available", "capacity", "updated_at"])
                               .values(**row))
            load = (await open_lead_counts(conn, [rep.id])).get(rep.id, 0)
        return rep_view(rep, container.config, row, load, now)

    return router
