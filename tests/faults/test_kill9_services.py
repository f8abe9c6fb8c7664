"""kill -9 each service in turn while touchpoints flow: nothing acknowledged is lost, nothing is doubled.

Split mode on Tansu and PostgreSQL: one ingest, two scoring, two router and two notifier processes.
While a few hundred buyers send their journeys, one process of ingest, then scoring, then router, then
notifier is SIGKILLed at a random moment and started again. Afterwards:

- every lead's score equals scoring's pure rules over the touchpoints ingest acknowledged (each once);
- every qualified buyer has exactly one assignment, pushed to the CRM under exactly one
  ``Idempotency-Key`` (the same key may repeat: at-least-once);
- every SLA timer that came due fired once, and reached the alert webhook under one key.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest

from scoring.rules import RuleSet
from services.config import load_config
from tests.faults.checks import (
    check_assignments,
    check_crm,
    check_scores,
    check_timers,
    eventually,
    observe,
    record_figures,
)
from tests.faults.workload import Sender, make_buyers
from tests.support.infra import Broker
from tests.support.receiver import Receiver
from tests.support.split import split_cluster, split_config

pytestmark = pytest.mark.e2e
BUYERS = 240
VICTIMS = ("ingest", "scoring", "router", "notifier")


async def test_kill9_each_service_in_turn(broker: Broker, fault_db: str, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    started = time.monotonic()
    async with Receiver() as crm, Receiver() as alerts:
        config = split_config(crm.url("/leads"), alerts.url("/"), sla="20s", reminders=(0.5,))
        buyers = make_buyers(BUYERS, rng)
        async with split_cluster(tmp_path, database_url=fault_db, bootstrap=broker.bootstrap,
                                 config=config) as cluster:
            rules = RuleSet.from_config(load_config(cluster.config_path).scoring)
            # Paced so the stream lasts about a minute: every kill lands while touchpoints flow.
            sender = Sender(lambda: cluster.url("ingest"), rng=random.Random(seed + 1), pause=(0.06, 0.22))
            stream = asyncio.create_task(sender.run(buyers, concurrency=5))
            kills: list[dict[str, Any]] = []
            for service in VICTIMS:
                await asyncio.sleep(rng.uniform(1.5, 5.0))
                victim = cluster.member(service, rng.randrange(len(cluster.members[service])))
                victim.kill9()
                kills.append({"member": victim.name, "acked_so_far": sender.stats.acknowledged,
                              "at_s": round(time.monotonic() - started, 1), "stream_running": not stream.done()})
                await asyncio.sleep(rng.uniform(0.1, 2.0))
                await cluster.restart(victim)
            await stream
            stream_done = time.monotonic()
            qualified = sum(1 for b in buyers if b.qualifies and b.key in sender.acked)

            async def settled() -> object:
                obs = await observe(fault_db)
                crm_rows = [d for d in obs.deliveries if d["target"] == "crm"]
                if not sender.acked_ids <= obs.touchpoint_ids or obs.outbox or len(obs.assignments) < qualified:
                    return None
                if len(crm_rows) < qualified or any(d["status"] == "pending" for d in obs.deliveries):
                    return None
                if any(t["status"] == "pending" for t in obs.timers) or len(obs.timers) < 2 * qualified:
                    return None
                return obs

            try:
                obs = await eventually(settled, 150, "the pipeline to settle")
            except AssertionError:
                obs = await observe(fault_db)
                print(cluster.diagnostics())
            scores = check_scores(obs, buyers, sender.acked, rules)
            assigned = check_assignments(obs, buyers, sender.acked)
            pushes = check_crm(obs, crm.requests)
            timers = check_timers(obs, alerts.requests)
            figures = {
                "seed": seed, "buyers": len(buyers), **sender.stats.figures(),
                "processed": len(sender.acked_ids & obs.touchpoint_ids),
                "lost": len(scores.lost_events) + scores.under_counted,
                "duplicated": scores.over_counted + assigned.double_assigned + len(pushes.with_two_keys)
                + len(timers.alerts.with_two_keys) + len(timers.doubled) + len(pushes.queued_twice),
                "kills": kills, "leads_checked": scores.leads_checked, "wrong_scores": len(scores.wrong_scores),
                "qualified": assigned.qualified, "assigned_once": assigned.assigned_once,
                "crm": pushes.figures(), "timers_due": timers.due, "timers_fired": timers.fired,
                "clocks_set_up_twice": len(timers.doubled),
                "alerts": timers.alerts.figures(), "dead_letters": len(obs.dead_letters),
                "settle_s": round(time.monotonic() - stream_done, 1),
                "seconds": round(time.monotonic() - started, 1),
            }
            record_figures("kill9_each_service", figures)

    assert sender.stats.gave_up == 0, "the sender gave up on touchpoints: ingest never came back"
    assert not scores.lost_events, f"acknowledged touchpoints lost: {scores.lost_events[:10]}"
    assert not scores.wrong_scores, "\n".join(scores.wrong_scores[:20])
    assert not scores.split_people, "\n".join(scores.split_people[:10])
    assert not assigned.problems, "\n".join(assigned.problems[:20])
    assert assigned.qualified > 20, "the workload should qualify a good number of leads"
    assert not pushes.missing and not pushes.with_two_keys and not pushes.unexpected, pushes.figures()
    assert not pushes.queued_twice, f"CRM pushes queued twice for one assignment: {pushes.queued_twice}"
    assert not timers.doubled, f"an assignment's SLA clock was set up twice (a lead.assigned applied twice): " \
        f"{timers.doubled}"
    assert timers.due == len(obs.timers) == 2 * assigned.qualified and not timers.not_fired, timers.not_fired[:10]
    assert not timers.alerts.missing and not timers.alerts.with_two_keys, timers.alerts.figures()
    assert not timers.alerts.unexpected, timers.alerts.unexpected[:10]
    assert not obs.dead_letters, [d["error"] for d in obs.dead_letters[:5]]
    assert [k["member"].split("-")[0] for k in kills] == list(VICTIMS)
    assert all(k["stream_running"] for k in kills), f"a kill missed the stream: {kills}"
