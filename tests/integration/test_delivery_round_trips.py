"""A push cycle of the delivery worker on PostgreSQL costs two transactions whatever the batch: one
claims the rows and reads their lead documents, one records the results. (A claim's transaction, then
the documents read on a second connection, was four round trips more per cycle: the notifier makes a
cycle per assignment or two at 1,000 tp/s end to end.) On SQLite the documents are read beside the
one writer, not holding it."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from notifier.deliveries import DeliveryWorker
from notifier.queue import enqueue_crm_push
from services.db.database import Database
from services.db.models import deliveries
from services.dlq import list_dead_letters
from services.events import utcnow
from tests.integration.test_dlq import crm_config
from tests.support.leadfactory import add_lead
from tests.support.pipeline import TEST_SECRETS
from tests.support.polling import eventually
from tests.support.receiver import Receiver

pytestmark = pytest.mark.integration


class Recorder:
    """Connections checked out and statements run, on every engine of a ``Database``."""

    def __init__(self, db: Database) -> None:
        self.checkouts = 0
        self.statements: Counter[str] = Counter()
        self.on = False
        for engine in {db.writer.sync_engine, db.reader.sync_engine}:
            event.listen(engine.pool, "checkout", self._checkout)
            event.listen(engine, "before_cursor_execute", self._statement)

    def _checkout(self, *args: Any) -> None:
        self.checkouts += self.on

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.on:
            self.statements[" ".join(statement.split()[:4])] += 1


async def test_a_push_cycle_is_two_transactions_and_reads_each_table_once(db: Database) -> None:
    connections = 2 if db.is_postgres else 3  # SQLite: claim (writer), documents (a reader), record
    async with Receiver() as crm:
        config = crm_config(crm.url("/leads"))
        async with db.transaction() as conn:
            for i in range(3):
                lead = await add_lead(conn, email=f"p{i}@acme.io", stage="sql", owner="anna")
                await enqueue_crm_push(conn, lead, f"asg-{i}", utcnow())
        recorder = Recorder(db)
        async with httpx.AsyncClient() as client:
            recorder.on = True
            sent = await DeliveryWorker(db, config, client, environ=dict(TEST_SECRETS)).run_once()
            recorder.on = False
    assert sent == 3 and len([q for q in crm.requests if q.path == "/leads"]) == 3
    assert recorder.checkouts == connections, f"{recorder.checkouts} connections for one cycle: {recorder.statements}"
    # The leads themselves once, with whether any lead was merged into each: none was merged away (none
    # is resolved) and none had a lead merged into it (no walk through merged leads), so once in all.
    leads_reads = [s for s in recorder.statements if s.startswith("SELECT leads.")]
    assert sorted(recorder.statements[s] for s in leads_reads) == [1], recorder.statements
    # The claim picks and leases the rows in one UPDATE ... RETURNING: no SELECT of the queue before it.
    assert not [s for s in recorder.statements if s.startswith("SELECT deliveries.")], recorder.statements


async def test_a_row_whose_requests_cannot_be_built_is_dead_lettered_and_the_rest_sent(db: Database) -> None:
    # The claim and the documents share a transaction: an error building one row's requests must not
    # roll the claim back (the batch would be claimed and fail again forever) but dead-letter that row.
    async with Receiver() as crm:
        config = crm_config(crm.url("/leads"))
        async with db.transaction() as conn:
            lead = await add_lead(conn, email="ok@acme.io", stage="sql", owner="anna")
            await conn.execute(deliveries.insert(), [{
                "target": "alert:webhook", "order_key": "mangled", "idempotency_key": "alert:mangled:webhook",
                "kind": "sla_breach", "lead_id": None, "payload": {"alert": {"not": "an alert"}, "sink": "webhook"},
                "status": "pending", "attempts": 0, "next_attempt_at": utcnow(), "created_at": utcnow()}])
            await enqueue_crm_push(conn, lead, "asg-1", utcnow())
        async with httpx.AsyncClient() as client:
            assert await DeliveryWorker(db, config, client, environ=dict(TEST_SECRETS)).run_once() == 2
    assert [q.path for q in crm.requests if q.path == "/leads"] == ["/leads"]
    async with db.read() as conn:
        statuses = dict((await conn.execute(select(deliveries.c.idempotency_key, deliveries.c.status))).all())
    # The mangled row is dead, the push delivered, and a dead-letter alert about the row is queued.
    assert statuses.pop("alert:mangled:webhook") == "dead"
    assert statuses.pop(f"{lead}:asg-1") == "delivered"
    assert list(statuses.values()) == ["pending"]
    dead = await list_dead_letters(db)
    assert len(dead) == 1 and "cannot build the requests" in dead[0]["error"]


async def test_the_worker_claims_once_per_wake_up_not_again_after_a_partial_round(db: Database) -> None:
    """A round that claimed less than a full batch left nothing due: the worker waits for the next row
    queued in this process (or its idle tick) instead of claiming again at once, which found nothing
    about every other time at 1,000 tp/s. The idle tick here is far longer than the test."""
    async with Receiver() as crm:
        config = crm_config(crm.url("/leads"))
        recorder = Recorder(db)
        recorder.on = True

        async def queue(i: int) -> None:
            async with db.transaction() as conn:  # the commit wakes the worker (same process)
                lead = await add_lead(conn, email=f"w{i}@acme.io", stage="sql", owner="anna")
                await enqueue_crm_push(conn, lead, f"asg-w{i}", utcnow())

        async def delivered(count: int) -> bool:
            async with db.read() as conn:
                rows = (await conn.execute(select(deliveries.c.status))).scalars().all()
            return sum(status == "delivered" for status in rows) == count

        async with httpx.AsyncClient() as client:
            stop = asyncio.Event()
            worker = DeliveryWorker(db, config, client, idle=60.0, environ=dict(TEST_SECRETS))
            await queue(0)  # before the worker starts: its first round claims it
            task = asyncio.create_task(worker.run(stop))
            try:
                await eventually(lambda: delivered(1), 10, "the first push recorded")
                await queue(1)
                await eventually(lambda: delivered(2), 10, "the second push recorded, woken by its commit")
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)
    claims = sum(n for s, n in recorder.statements.items() if s.startswith("UPDATE deliveries SET next_attempt_at"))
    assert claims == 2, recorder.statements
