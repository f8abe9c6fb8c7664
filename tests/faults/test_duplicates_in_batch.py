"""A redelivered event inside the same batch is applied once.

Found by the PostgreSQL-cut case: an outbox relay whose connection is cut after it published, but
before its delete committed, publishes the same rows again, and a consumer can then fetch both copies
in one poll. Handlers claim event ids once per transaction, so the runner must hand them each id once:
before the fix the notifier set up the lead's SLA clock twice (four timers, two reminders) and queued
two CRM pushes for one assignment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import func, select

from notifier.consumer import NotifierHandler
from services.bus.base import Consumer, Message
from services.config import load_config
from services.consumer import ConsumerRunner
from services.db.database import Database
from services.db.models import deliveries, sla_timers
from services.events import ASSIGNMENTS, LEAD_ASSIGNED, Event, LeadAssigned, utcnow
from tests.support.buses import OneConsumerBus


class _OneBatch(Consumer):
    def __init__(self, batch: list[Message], done: asyncio.Event) -> None:
        self.batch = batch
        self.done = done
        self.committed: list[Message] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Message]:
        if self.batch:
            batch, self.batch = self.batch, []
            return batch
        await asyncio.sleep(0.01)
        return []

    async def commit(self, messages: Sequence[Message]) -> None:
        self.committed += messages
        self.done.set()


async def test_the_same_assignment_twice_in_one_batch_starts_one_clock(db: Database) -> None:
    now = utcnow()
    event = Event.new(LEAD_ASSIGNED, source="router", key="L1", data=LeadAssigned(
        lead_id="L1", assignment_id="A1", rep_id="anna", team="emea", reason="test",
        assigned_at=now - timedelta(seconds=1)).model_dump(mode="json"))
    copy = Message(ASSIGNMENTS, 0, 7, event.key, event.value(), event.headers())
    again = Message(ASSIGNMENTS, 0, 8, event.key, event.value(), event.headers())  # republished by a relay
    done = asyncio.Event()
    consumer = _OneBatch([copy, again], done)
    runner = ConsumerRunner(db, OneConsumerBus(consumer), NotifierHandler(db, load_config(None)), poll_timeout=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await asyncio.wait_for(done.wait(), 20)
    stop.set()
    await task
    async with db.read() as conn:
        timers = (await conn.execute(select(func.count()).select_from(sla_timers))).scalar_one()
        pushes = (await conn.execute(select(func.count()).select_from(deliveries)
                                     .where(deliveries.c.target == "crm"))).scalar_one()
    assert max(m.offset for m in consumer.committed) == 8  # both copies are committed past
    assert timers == 3  # the example config: two reminders and the breach, once
    assert pushes == 1
