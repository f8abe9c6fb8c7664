"""A consumer process for the kill -9 tests: applies each event once into ``demo_inbox`` (channel kill9).

    python -m tests.support.kill9_consumer <database_url> <local|kafka> <bootstrap> <prefix> <group>
"""

from __future__ import annotations

import asyncio
import sys

from services.bus.base import Bus
from services.bus.kafka import KafkaBus
from services.bus.local import LocalBus
from services.consumer import ConsumerRunner, Handler
from services.db.database import Database
from services.db.models import demo_inbox
from services.events import TOUCHPOINTS, Event, utcnow
from services.idempotency import claim_new


class Applier(Handler):
    topics = (TOUCHPOINTS,)

    def __init__(self, db: Database, group: str) -> None:
        self.db = db
        self.group = group

    async def handle(self, events: list[Event]) -> None:
        async with self.db.transaction() as conn:
            fresh = await claim_new(conn, self.group, [e.id for e in events])
            rows = [{"channel": "kill9", "headers": {}, "body": {"event_id": e.id}, "received_at": utcnow()}
                    for e in events if e.id in fresh]
            if rows:
                await conn.execute(demo_inbox.insert(), rows)
            # Work that takes a little time, inside the transaction: a fast machine must not finish the
            # whole stream between two of the test's progress checks (it would leave nothing to kill).
            await asyncio.sleep(0.05)


async def main(url: str, kind: str, bootstrap: str, prefix: str, group: str) -> None:
    db = Database(url)
    bus: Bus = (LocalBus(db, prefix=prefix, partitions=4, lease_seconds=2) if kind == "local"
                else KafkaBus(bootstrap, prefix=prefix, partitions=4, session_timeout_ms=3000))
    await bus.start()
    runner = ConsumerRunner(db, bus, Applier(db, group), max_batch=20, poll_timeout=0.2)
    print("ready", flush=True)
    await runner.run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
