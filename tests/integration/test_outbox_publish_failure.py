"""A relay round whose publish fails leaves every row it took in the outbox; the next round sends them
all, in the order they were queued, and empties the outbox."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from services.bus.base import BusUnavailable
from services.db.database import Database
from services.db.models import outbox
from services.events import Event
from services.outbox import OutboxRelay, add_events
from tests.support.buses import RecordingBus

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)]


def event(event_id: str) -> Event:
    return Event(id=event_id, type="lead.scored", source="test", time=datetime.now(UTC), key="lead-1",
                 data={"lead_id": "lead-1"})


async def outbox_rows(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(outbox))).scalar_one())


async def test_a_failed_publish_keeps_the_rows_and_the_next_round_sends_them_in_order(db: Database) -> None:
    queued = [("lead-events", "e1"), ("assignments", "e2"), ("lead-events", "e3"), ("lead-events", "e4")]
    for topic, event_id in queued:
        async with db.transaction() as conn:
            await add_events(conn, topic, [event(event_id)])
    bus = RecordingBus(failures=1)
    relay = OutboxRelay(db, bus)
    with pytest.raises(BusUnavailable):
        await relay.relay_once()
    assert await outbox_rows(db) == 4  # the round's delete rolled back with it
    assert await relay.relay_once() == 4
    assert list(zip(bus.topics, bus.published, strict=True)) == queued
    assert await outbox_rows(db) == 0
    assert await relay.relay_once() == 0
