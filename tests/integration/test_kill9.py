"""kill -9 a consumer process mid-stream, repeatedly: nothing acknowledged is lost, nothing applied twice."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from services.bus.base import Bus
from services.bus.kafka import KafkaBus
from services.bus.local import LocalBus
from services.db.database import Database
from services.db.models import demo_inbox
from services.events import TOUCHPOINTS, Event

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
N = 600


async def applied(db: Database) -> tuple[int, int]:
    async with db.read() as conn:
        rows = list((await conn.execute(select(demo_inbox.c.body).where(demo_inbox.c.channel == "kill9"))).scalars())
    return len(rows), len({r["event_id"] for r in rows})


async def test_kill9_loses_nothing_and_doubles_nothing(db: Database, bus: Bus, request: pytest.FixtureRequest) -> None:
    kind = "local" if isinstance(bus, LocalBus) else "kafka"
    bootstrap = bus.bootstrap if isinstance(bus, KafkaBus) else "-"
    prefix = bus.prefix  # type: ignore[attr-defined]
    group = f"kill9-{uuid.uuid4().hex[:6]}"
    events = [Event.new("test.event", source="tests", key=f"k{i % 13}", id=f"kill9-{i}", data={"i": i})
              for i in range(N)]
    for start in range(0, N, 100):
        await bus.publish(TOUCHPOINTS, events[start:start + 100])  # acknowledged from here on

    rng = random.Random(int(os.environ.get("KILL9_SEED", "9")))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.support.kill9_consumer", db.url, kind, bootstrap, prefix, group]
    kills = 0
    deadline = time.monotonic() + 240  # generous: a loaded CI machine rejoins Kafka groups slowly
    while time.monotonic() < deadline:
        # Starting the process is quick; the waiting below is all async.
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,  # noqa: ASYNC220
                                stderr=subprocess.DEVNULL)
        try:
            before = (await applied(db))[1]
            if kills < 3 and before < N:
                # Kill at a random point once it has made some progress (or after a while regardless).
                target = before + rng.randint(20, 120)
                t0 = time.monotonic()
                while (await applied(db))[1] < min(target, N) and time.monotonic() - t0 < 20:
                    await asyncio.sleep(rng.uniform(0.005, 0.03))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
            while (await applied(db))[1] < N and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            break
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    total, distinct = await applied(db)
    print(f"kill -9 x{kills}: sent {N}, applied {distinct}, lost {N - distinct}, duplicated {total - distinct}")
    assert kills == 3
    assert distinct == N, f"lost {N - distinct} acknowledged events (or still catching up at the deadline)"
    assert total == distinct, f"{total - distinct} events applied twice"
