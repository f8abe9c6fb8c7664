"""Dead letters end to end: a CRM that refuses (4xx) and a poison event; `handoff dlq` lists and replays."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import select

from notifier.deliveries import DeliveryWorker
from notifier.queue import enqueue_crm_push
from services.bus.base import Bus
from services.config import HandoffConfig, load_config
from services.consumer import ConsumerRunner, Handler
from services.db.database import Database
from services.db.models import dead_letters, deliveries
from services.dlq import list_dead_letters, replay
from services.events import LEAD_EVENTS, Event, utcnow
from services.outbox import OutboxRelay
from tests.support.leadfactory import add_lead
from tests.support.pipeline import TEST_SECRETS
from tests.support.receiver import Receiver, Reply

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def crm_config(url: str) -> HandoffConfig:
    data = load_config(None).model_dump(mode="json")
    data["crm"] = {"kind": "webhook", "url": url, "secret_env": "CRM_SIGNING_SECRET", "timeout_seconds": 2}
    data["alerts"] = {"webhook": {"url": url.replace("/leads", "/alerts")}}
    return HandoffConfig.model_validate(data)


async def test_a_refused_push_is_dead_lettered_alerted_and_replayed(db: Database, database_url: str) -> None:
    async with Receiver() as crm:
        crm.script(Reply(422, body=b'{"message": "missing field Company"}'))
        config = crm_config(crm.url("/leads"))
        async with db.transaction() as conn:
            lead = await add_lead(conn, email="dee@acme.io", stage="sql", owner="anna")
            await enqueue_crm_push(conn, lead, "asg-1", utcnow())
        async with httpx.AsyncClient() as client:
            worker = DeliveryWorker(db, config, client, environ=dict(TEST_SECRETS))
            while await worker.run_once():
                pass
            dead = await list_dead_letters(db)
            assert len(dead) == 1 and dead[0]["origin"] == "delivery:crm"
            assert "422" in dead[0]["error"]
            alerts = [q.json() for q in crm.requests if q.path == "/alerts"]
            assert alerts and alerts[0]["kind"] == "dead_letter"
            # The CLI shows it too (what an operator runs).
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.cli", "dlq", "list", "--json", cwd=ROOT,
                env={**os.environ, "HANDOFF_DATABASE_URL": database_url}, stdout=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0
            assert orjson.loads(out.splitlines()[0])["id"] == dead[0]["id"]
            # Fixed on the CRM side: replay, and the same idempotency key is delivered.
            outcomes = await replay(db, [dead[0]["id"]])
            assert "back in the crm queue" in outcomes[0][1]
            while await worker.run_once():
                pass
    pushes = [q for q in crm.requests if q.path == "/leads"]
    assert [q.headers["idempotency-key"] for q in pushes] == [f"{lead}:asg-1"] * 2
    async with db.read() as conn:
        status = (await conn.execute(select(deliveries.c.status).where(deliveries.c.target == "crm"))).scalar_one()
        replayed = (await conn.execute(select(dead_letters.c.replayed_at))).scalars().first()
    assert status == "delivered" and replayed is not None
    assert await list_dead_letters(db) == []


async def test_one_batch_with_every_outcome_is_recorded_together(db: Database) -> None:
    # Three pushes sent in one run of the worker: refused (422), unavailable (503) and accepted. Their
    # results are written in one transaction, each with its own verdict.
    async with Receiver() as crm:
        crm.script(Reply(422, body=b'{"message": "missing field Company"}'), Reply(503))
        config = crm_config(crm.url("/leads"))
        async with db.transaction() as conn:
            for i in range(3):
                lead = await add_lead(conn, email=f"p{i}@acme.io", stage="sql", owner="anna")
                await enqueue_crm_push(conn, lead, f"asg-{i}", utcnow())
        async with httpx.AsyncClient() as client:
            sent = await DeliveryWorker(db, config, client, environ=dict(TEST_SECRETS)).run_once()
    assert sent == 3
    async with db.read() as conn:
        rows = (await conn.execute(select(deliveries.c.status, deliveries.c.attempts, deliveries.c.last_status,
                                          deliveries.c.next_attempt_at, deliveries.c.delivered_at)
                                   .where(deliveries.c.target == "crm"))).all()
        dead_ids = (await conn.execute(select(dead_letters.c.delivery_id))).scalars().all()
    by_status = {r.last_status: r for r in rows}
    assert sorted(r.status for r in rows) == ["dead", "delivered", "pending"]
    assert all(r.attempts == 1 for r in rows)
    assert by_status[422].status == "dead" and len(dead_ids) == 1
    assert by_status[503].status == "pending" and by_status[503].next_attempt_at > utcnow()
    assert by_status[200].status == "delivered" and by_status[200].delivered_at is not None


class Picky(Handler):
    """Fails on events whose data says so: the poison; records the rest."""

    group = "picky"
    topics = (LEAD_EVENTS,)

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.fixed = False

    async def handle(self, events: list[Event]) -> None:
        for e in events:
            if e.data.get("poison") and not self.fixed:
                raise ValueError(f"cannot process {e.id}: bad data")
        self.seen += [e.id for e in events]


async def test_a_poison_event_is_dead_lettered_the_rest_go_on_and_replay_works(db: Database, bus: Bus) -> None:
    events = [Event.new("test.event", source="tests", key="k", id=f"p{i}", data={"poison": i == 3})
              for i in range(8)]
    await bus.publish(LEAD_EVENTS, events)
    handler = Picky()
    runner = ConsumerRunner(db, bus, handler, poll_timeout=0.2, attempts_before_split=2)
    relay = OutboxRelay(db, bus)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(runner.run(stop)), asyncio.create_task(relay.run(stop))]
    try:
        async def settled(ids: set[str]) -> None:
            for _ in range(300):
                if ids <= set(handler.seen):
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"never saw {sorted(ids - set(handler.seen))}")

        await settled({f"p{i}" for i in range(8) if i != 3})
        dead = await list_dead_letters(db)
        assert [d["event_id"] for d in dead] == ["p3"] and "bad data" in dead[0]["error"]
        assert "p3" not in handler.seen
        handler.fixed = True
        assert "re-published" in (await replay(db))[0][1]
        await settled({"p3"})
    finally:
        stop.set()
        await asyncio.gather(*tasks)
