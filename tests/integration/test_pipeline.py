"""Ingest -> scoring -> router on every database and bus: a buyer's journey becomes an assigned SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from services.db.models import assignments, leads, processed_events, stage_history
from tests.support.infra import Broker
from tests.support.pipeline import running_pipeline

pytestmark = pytest.mark.integration


def journey(email: str, anon: str) -> list[dict[str, Any]]:
    # Times relative to now: engagement decays with age, so fixed dates made this test fail weeks later.
    start = datetime.now(UTC) - timedelta(minutes=30)

    def at(minutes: int) -> str:
        return (start + timedelta(minutes=minutes)).isoformat()

    return [
        {"event_id": f"{anon}-1", "type": "page_view", "anonymous_id": anon, "properties": {"path": "/blog/x"},
         "occurred_at": at(0)},
        {"event_id": f"{anon}-2", "type": "page_view", "anonymous_id": anon, "properties": {"path": "/pricing"},
         "occurred_at": at(5)},
        {"event_id": f"{anon}-3", "type": "form_submit", "anonymous_id": anon, "email": email,
         "properties": {"form": "demo"}, "traits": {"title": "VP Sales", "country": "DE", "company": "Acme"},
         "occurred_at": at(10)},
    ]


async def test_journey_to_assignment_and_redelivery_is_a_noop(
    database_url: str, bus_kind: str, maybe_broker: Broker | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_pipeline(database_url, bus_kind, maybe_broker, services={"ingest", "scoring", "router"},
                                monkeypatch=monkeypatch) as p:
        r = await p.client.post("/v1/touchpoints/batch", json={"touchpoints": journey("Jane@Acme.com ", "a-1")},
                                headers=p.auth())
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": 3, "duplicates": 0}
        again = await p.client.post("/v1/touchpoints/batch", json={"touchpoints": journey("jane@acme.com", "a-1")},
                                    headers=p.auth())
        assert again.json() == {"accepted": 0, "duplicates": 3}

        db = p.container.db

        async def assigned() -> Any:
            async with db.read() as conn:
                return (await conn.execute(select(leads).where(leads.c.stage == "sql"))).mappings().first()

        lead = await p.wait_for(assigned, what="the lead to be assigned")
        assert lead["email"] == "jane@acme.com"
        assert lead["team"] == "emea" and lead["owner"] in ("anna", "ben")
        assert lead["fit"] == 20 and lead["engagement"] > 50
        async with db.read() as conn:
            stages = list((await conn.execute(select(stage_history.c.to_stage).where(
                stage_history.c.lead_id == lead["id"]).order_by(stage_history.c.id))).scalars())
            n_assign = (await conn.execute(select(func.count()).select_from(assignments))).scalar_one()
            n_leads = (await conn.execute(select(func.count()).select_from(leads))).scalar_one()
            scored = (await conn.execute(select(func.count()).select_from(processed_events).where(
                processed_events.c.consumer == "scoring"))).scalar_one()
        assert stages[-2:] == ["mql", "sql"]
        assert n_assign == 1 and n_leads == 1 and scored == 3
