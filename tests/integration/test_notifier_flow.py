"""Assignment -> CRM push and SLA clock, against real HTTP receivers on loopback, on every db and bus."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select

from services.config import HandoffConfig, load_config
from services.db.models import assignments, deliveries, lead_sla, leads
from services.signing import verify
from tests.support.infra import Broker
from tests.support.pipeline import TEST_SECRETS, running_pipeline
from tests.support.receiver import Receiver, Reply

pytestmark = pytest.mark.integration


def short_sla_config(crm_url: str, alerts_url: str) -> HandoffConfig:
    data = load_config(None).model_dump(mode="json")
    data["sla"] = {"first_touch": "3s", "reminders": [0.5], "on_breach": ["alert_rep", "page_oncall", "reassign"]}
    data["crm"] = {"kind": "webhook", "url": crm_url, "secret_env": "CRM_SIGNING_SECRET", "timeout_seconds": 2}
    data["alerts"] = {"webhook": {"url": alerts_url + "alerts"},
                      "pagerduty": {"url": alerts_url + "pd", "routing_key_env": "PD_ROUTING_KEY"}}
    for rep in data["reps"]:
        rep["hours"] = "00:00-24:00"
    return HandoffConfig.model_validate(data)


def demo_request(email: str) -> dict[str, Any]:
    return {"event_id": f"demo-{email}", "type": "form_submit", "email": email, "properties": {"form": "demo"},
            "traits": {"title": "Head of Growth", "country": "US"}}


async def test_push_reaches_crm_and_breach_pages_and_reassigns(
    database_url: str, bus_kind: str, maybe_broker: Broker | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Receiver() as crm, Receiver() as alerts:
        crm.script(Reply(503), Reply(429, headers={"Retry-After": "1"}))  # then 200s
        config = short_sla_config(crm.url("/leads"), alerts.url("/"))
        async with running_pipeline(database_url, bus_kind, maybe_broker, config=config, monkeypatch=monkeypatch,
                                    services={"ingest", "scoring", "router", "notifier"}) as p:
            r = await p.client.post("/v1/touchpoints", json=demo_request("kim@bigco.com"), headers=p.auth())
            assert r.status_code == 202, r.text

            async def pushes() -> list[Any]:
                return [q for q in crm.requests if q.method == "POST"]

            await p.wait_for(lambda: _at_least(pushes, 3), timeout=40, what="the CRM push (after 503 and 429)")
            first = (await pushes())[0]
            key = first.headers["idempotency-key"]
            assert all(q.headers["idempotency-key"] == key for q in (await pushes())[:3])
            delivered = (await pushes())[2]
            assert verify(delivered.body, delivered.headers["x-handoff-signature"],
                          [TEST_SECRETS["CRM_SIGNING_SECRET"]], time.time()) is None
            body = delivered.json()
            assert body["lead"]["emails"] == ["kim@bigco.com"]
            assert body["assignment"]["rep_id"] in ("carl", "dana")
            assert body["sla"]["due_at"]
            assert {item["rule"] for item in body["score"]["breakdown"]} >= {"demo-request", "senior-title"}

            def kinds() -> list[str]:
                return [q.json().get("kind") or q.json().get("event_action") for q in alerts.requests]

            async def paged_and_reassigned() -> bool:
                async with p.container.db.read() as conn:
                    ids = list((await conn.execute(select(assignments.c.id).order_by(
                        assignments.c.assigned_at))).scalars())
                    clock = (await conn.execute(select(lead_sla.c.assignment_id))).scalar_one_or_none()
                # Reassigned, and the notifier has started the new assignment's clock.
                return "trigger" in kinds() and "sla_breach" in kinds() and len(ids) >= 2 and clock == ids[-1]

            await p.wait_for(paged_and_reassigned, timeout=40, what="breach, page and reassignment")
            assert "sla_reminder" in kinds()
            async with p.container.db.read() as conn:
                rows = (await conn.execute(select(assignments).order_by(assignments.c.assigned_at))).mappings().all()
                lead = (await conn.execute(select(leads))).mappings().one()
                sla = (await conn.execute(select(lead_sla))).mappings().one()
                crm_rows = (await conn.execute(select(deliveries).where(deliveries.c.target == "crm"))).all()
            assert rows[0]["ended_at"] is not None and rows[1]["rep_id"] != rows[0]["rep_id"]
            assert lead["owner"] == rows[1]["rep_id"] and lead["stage"] == "sql"
            assert sla["assignment_id"] == rows[1]["id"]
            # One delivery row per assignment: two pushes, under two keys, never one key twice for two rows.
            assert len({r.idempotency_key for r in crm_rows}) == len(crm_rows) == 2


async def _at_least(fetch: Any, n: int) -> bool:
    return len(await fetch()) >= n
