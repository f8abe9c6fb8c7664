"""PostgreSQL connections cut under load, a few times: every service reconnects and goes on, and
nothing acknowledged is lost or doubled.

While buyers send their journeys to a split cluster, every backend of the service's database is
terminated (``pg_terminate_backend``) several times at random moments: consumers in the middle of a
transaction, the outbox relay, the SLA clock and the delivery worker all lose their connections.
Afterwards the same invariants as the kill -9 case hold: exact scores, one assignment and one CRM key
per qualified lead, every due SLA timer fired and alerted once.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import asyncpg
import pytest

from scoring.rules import RuleSet
from services.config import load_config
from tests.faults.checks import (
    check_assignments,
    check_crm,
    check_scores,
    check_timers,
    observe,
    record_figures,
    settle_pipeline,
)
from tests.faults.workload import Sender, make_buyers
from tests.support.infra import PG_ADMIN_DSN, Broker
from tests.support.receiver import Receiver
from tests.support.split import split_cluster, split_config

pytestmark = pytest.mark.e2e
CUTS = 8


async def terminate_backends(database: str) -> int:
    """Terminate every connection to ``database`` but our own; how many were cut."""
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()) AS cut", database))
    finally:
        await conn.close()


async def test_postgres_connections_cut_under_load(broker: Broker, fault_db: str, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    started = time.monotonic()
    database = fault_db.rsplit("/", 1)[1]
    async with Receiver() as crm, Receiver() as alerts:
        config = split_config(crm.url("/leads"), alerts.url("/"), sla="15s", reminders=(0.5,))
        buyers = make_buyers(180, rng, prefix="c")
        async with split_cluster(tmp_path, database_url=fault_db, bootstrap=broker.bootstrap,
                                 config=config) as cluster:
            rules = RuleSet.from_config(load_config(cluster.config_path).scoring)
            sender = Sender(lambda: cluster.url("ingest"), rng=random.Random(seed + 1), pause=(0.05, 0.2))
            stream = asyncio.create_task(sender.run(buyers, concurrency=5))
            cuts = []
            for _ in range(CUTS):
                await asyncio.sleep(rng.uniform(1.5, 4.0))
                cuts.append({"connections": await terminate_backends(database),
                             "acked_so_far": sender.stats.acknowledged, "stream_running": not stream.done()})
            await stream
            stream_done = time.monotonic()
            obs = await settle_pipeline(fault_db, sender.acked_ids, buyers, sender.acked, crm.requests,
                                        timers_per_assignment=2)
            if obs is None:
                print(cluster.diagnostics())
                obs = await observe(fault_db)
            scores = check_scores(obs, buyers, sender.acked, rules)
            assigned = check_assignments(obs, buyers, sender.acked)
            pushes = check_crm(obs, crm.requests)
            timers = check_timers(obs, alerts.requests)
            exited = [m.name for m in cluster.all_members() if not m.alive]
            reconnects = len(cluster.grep("WARNING"))
            record_figures("postgres_cut", {
                "seed": seed, "cuts": cuts, **sender.stats.figures(),
                "processed": len(sender.acked_ids & obs.touchpoint_ids),
                "lost": len(scores.lost_events) + scores.under_counted,
                "duplicated": scores.over_counted + assigned.double_assigned + len(pushes.with_two_keys)
                + len(timers.alerts.with_two_keys) + len(timers.doubled) + len(pushes.queued_twice),
                "qualified": assigned.qualified, "crm": pushes.figures(), "timers_due": timers.due,
                "timers_fired": timers.fired,
                "clocks_set_up_twice": len(timers.doubled), "alerts": timers.alerts.figures(),
                "dead_letters": len(obs.dead_letters), "warnings_logged": reconnects, "processes_exited": exited,
                "settle_s": round(time.monotonic() - stream_done, 1), "seconds": round(time.monotonic() - started, 1)})

    assert sum(c["connections"] for c in cuts) > 0, "no connection was cut"
    assert not exited, f"processes died instead of reconnecting: {exited}"
    assert sender.stats.gave_up == 0 and sender.stats.acknowledged == sender.stats.sent
    assert not scores.lost_events, f"acknowledged touchpoints lost: {scores.lost_events[:10]}"
    assert not scores.wrong_scores and not scores.split_people, (scores.wrong_scores + scores.split_people)[:20]
    assert not assigned.problems, assigned.problems[:20]
    assert not pushes.missing and not pushes.with_two_keys and not pushes.unexpected, pushes.figures()
    assert not pushes.queued_twice, f"CRM pushes queued twice for one assignment: {pushes.queued_twice}"
    assert not timers.doubled, f"an assignment's SLA clock was set up twice (a lead.assigned applied twice): " \
        f"{timers.doubled}"
    assert timers.due == len(obs.timers) == 2 * assigned.qualified and not timers.not_fired, timers.not_fired[:10]
    assert not timers.alerts.missing and not timers.alerts.with_two_keys, timers.alerts.figures()
    assert not obs.dead_letters, [d["error"] for d in obs.dead_letters[:5]]
