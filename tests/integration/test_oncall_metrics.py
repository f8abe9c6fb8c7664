"""The on-call gauges on ``/metrics``, refreshed from the database before each scrape."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.db.database import Database
from services.db.models import dead_letters, deliveries, lead_sla, leads
from services.events import utcnow
from tests.support.app import api_client


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await client.get("/metrics")
    assert r.status_code == 200
    return samples(r.text)


def lead_row(lead_id: str, stage: str, assigned_minutes_ago: float | None, merged: bool = False) -> dict[str, object]:
    now = utcnow()
    return {"id": lead_id, "stage": stage, "email": None, "company_domain": None, "fit": 0, "engagement": 0,
            "total": 0, "traits": {}, "score_state": {}, "source": "website", "campaign": None, "owner": "anna",
            "team": "emea", "merged_into": "x" if merged else None, "created_at": now, "updated_at": now,
            "stage_changed_at": now, "qualified_at": None, "contacted_at": None, "version": 1,
            "assigned_at": now - timedelta(minutes=assigned_minutes_ago) if assigned_minutes_ago else None}


async def fill(db: Database) -> None:
    now = utcnow()
    async with db.transaction() as conn:
        await conn.execute(leads.insert(), [
            lead_row("w1", "sql", 10), lead_row("w2", "sql", 5), lead_row("gone", "sql", 600, merged=True),
            lead_row("done", "contacted", 900)])
        sla = {"assignment_id": "a", "rep_id": "anna", "reminders_sent": 0, "paged": False, "started_at": now,
               "stopped_at": None}
        await conn.execute(lead_sla.insert(), [
            {**sla, "lead_id": "w1", "due_at": now - timedelta(minutes=1), "state": "running", "breached_at": None},
            {**sla, "lead_id": "w2", "due_at": now + timedelta(minutes=20), "state": "running", "breached_at": None},
            {**sla, "lead_id": "b1", "due_at": now, "state": "breached", "breached_at": now},
            {**sla, "lead_id": "b2", "due_at": now, "state": "breached", "breached_at": now}])
        delivery = {"order_key": "k", "idempotency_key": "i", "kind": "push", "lead_id": "w1", "payload": {},
                    "next_attempt_at": now, "created_at": now}
        await conn.execute(deliveries.insert(), [
            {**delivery, "target": "crm", "status": "dead", "attempts": 12},
            {**delivery, "target": "crm", "status": "pending", "attempts": 2},
            {**delivery, "target": "crm", "status": "pending", "attempts": 0},  # not tried yet: no failure
            {**delivery, "target": "crm", "status": "delivered", "attempts": 3},
            {**delivery, "target": "alert:slack", "status": "dead", "attempts": 1}])
        letter = {"payload": {}, "error": "boom", "created_at": now, "replayed_at": None}
        await conn.execute(dead_letters.insert(), [
            {**letter, "origin": "consumer:scoring"}, {**letter, "origin": "consumer:scoring"},
            {**letter, "origin": "consumer:scoring", "replayed_at": now}, {**letter, "origin": "delivery:crm"}])


def lag_of(found: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], group: str) -> float | None:
    return found.get(("handoff_consumer_group_lag", (("group", group),)))


async def test_gauges_follow_the_database(database_url: str) -> None:
    async with api_client(database_url) as (client, container):
        empty = await scrape(client)
        assert empty[("handoff_leads_awaiting_contact", ())] == 0
        assert empty[("handoff_leads_awaiting_contact_oldest_seconds", ())] == 0
        assert empty[("handoff_crm_delivery_failures", (("state", "dead"),))] == 0
        assert not [key for key in empty if key[0] == "handoff_dead_letters"]

        await fill(container.db)
        found = await scrape(client)
        assert found[("handoff_leads_awaiting_contact", ())] == 2  # the merged one and the contacted one not
        assert 600 <= found[("handoff_leads_awaiting_contact_oldest_seconds", ())] < 660
        assert found[("handoff_sla_breached_leads", ())] == 2
        assert found[("handoff_sla_overdue_leads", ())] == 1
        assert found[("handoff_crm_delivery_failures", (("state", "dead"),))] == 1
        assert found[("handoff_crm_delivery_failures", (("state", "retrying"),))] == 1
        assert found[("handoff_dead_letters", (("origin", "consumer:scoring"),))] == 2
        assert found[("handoff_dead_letters", (("origin", "delivery:crm"),))] == 1
        assert lag_of(found, "scoring") is None  # no lag source wired: no lag series invented

        async with container.db.transaction() as conn:  # replaying empties an origin: its series goes
            await conn.execute(dead_letters.update().values(replayed_at=utcnow()))
        assert not [key for key in await scrape(client) if key[0] == "handoff_dead_letters"]


async def test_consumer_lag_from_the_process(database_url: str) -> None:
    async with api_client(database_url) as (client, container):
        async def lag() -> dict[str, int]:
            return {"scoring": 7, "router": 0}

        container.extras["consumer_lag"] = lag
        found = await scrape(client)
        assert lag_of(found, "scoring") == 7 and lag_of(found, "router") == 0

        container.extras["consumer_lag"] = lambda: {"notifier": 3}  # a plain function works too
        found = await scrape(client)
        assert lag_of(found, "notifier") == 3 and lag_of(found, "scoring") is None

        def broken() -> dict[str, int]:
            raise ConnectionError("broker unreachable")

        container.extras["consumer_lag"] = broken  # the scrape still answers, with the last known lag
        found = await scrape(client)
        assert lag_of(found, "notifier") == 3 and found[("handoff_leads_awaiting_contact", ())] == 0
