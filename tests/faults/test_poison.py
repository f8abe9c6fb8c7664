"""Poison messages on every topic: dead-lettered with their error, and the consumers go on.

Produced straight onto the split cluster's topics with aiokafka, on every partition, ahead of a stream
of good touchpoints: raw garbage without CloudEvents headers, a CloudEvent whose ``ce_time`` is not a
time, and a well-formed CloudEvent whose data fails validation. Each one must end as a ``dead_letters``
row naming the consumer group and the error (and show in ``handoff dlq list``), and the good
touchpoints behind them must be scored, qualified, assigned and pushed as usual.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from scoring.rules import RuleSet
from services.config import load_config
from services.events import (
    ASSIGNMENTS,
    LEAD_ASSIGNED,
    LEAD_EVENTS,
    LEAD_SCORED,
    TOUCHPOINT_RECEIVED,
    TOUCHPOINTS,
)
from tests.faults.checks import check_assignments, check_crm, check_scores, eventually, observe, record_figures
from tests.faults.workload import Sender, make_buyers
from tests.support.infra import Broker
from tests.support.processes import handoff_bin
from tests.support.receiver import Receiver
from tests.support.split import split_cluster, split_config

pytestmark = pytest.mark.e2e
PARTITIONS = 4
BAD_DATA = {TOUCHPOINTS: (TOUCHPOINT_RECEIVED, {"event_id": "poison", "type": 42}),
            LEAD_EVENTS: (LEAD_SCORED, {"lead_id": ["not", "a", "string"], "fit": "lots"}),
            ASSIGNMENTS: (LEAD_ASSIGNED, {"lead_id": "L-poison"})}
# Which consumer groups read each topic (and so must each dead-letter every poison message on it).
READERS = {TOUCHPOINTS: ("scoring",), LEAD_EVENTS: ("router", "notifier"), ASSIGNMENTS: ("notifier",)}


def ce_headers(event_id: str, type_: str, time_: str = "2026-11-22T10:00:00+00:00") -> list[tuple[str, bytes]]:
    return [("ce_specversion", b"1.0"), ("ce_id", event_id.encode()), ("ce_type", type_.encode()),
            ("ce_source", b"tests/poison"), ("ce_time", time_.encode()), ("content-type", b"application/json")]


async def produce_poison(bootstrap: str, prefix: str) -> dict[tuple[str, str], int]:
    """Three bad messages per partition of each topic; the dead letters each consumer group owes."""
    owed: Counter[tuple[str, str]] = Counter()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for topic, (type_, data) in BAD_DATA.items():
            for p in range(PARTITIONS):
                messages = [
                    (b"\x00\xffnot json at all", []),
                    (b'{"x": 1}', ce_headers(f"poison-time-{topic}-{p}", type_, "yesterday-ish")),
                    (json.dumps(data).encode(), ce_headers(f"poison-data-{topic}-{p}", type_)),
                ]
                for value, headers in messages:
                    await producer.send_and_wait(prefix + topic, value, key=f"poison-{p}".encode(), partition=p,
                                                 headers=headers)
                for group in READERS[topic]:
                    # The bad-data lead.scored is no business of the notifier (it ignores that type).
                    owed[(group, topic)] += 2 if (group == "notifier" and topic == LEAD_EVENTS) else 3
    finally:
        await producer.stop()
    return dict(owed)


async def test_poison_messages_are_dead_lettered_and_consumers_go_on(
        broker: Broker, fault_db: str, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    started = time.monotonic()
    async with Receiver() as crm, Receiver() as alerts:
        config = split_config(crm.url("/leads"), alerts.url("/"), sla="1h")
        buyers = make_buyers(60, rng, prefix="p")
        async with split_cluster(tmp_path, database_url=fault_db, bootstrap=broker.bootstrap,
                                 config=config) as cluster:
            rules = RuleSet.from_config(load_config(cluster.config_path).scoring)
            owed = await produce_poison(broker.bootstrap, cluster.topic_prefix)
            sender = Sender(lambda: cluster.url("ingest"), rng=random.Random(seed))
            await sender.run(buyers, concurrency=6)
            qualified = sum(1 for b in buyers if b.qualifies)

            async def settled() -> object:
                obs = await observe(fault_db)
                crm_rows = [d for d in obs.deliveries if d["target"] == "crm"]
                done = (sender.acked_ids <= obs.touchpoint_ids and len(obs.assignments) >= qualified
                        and len(crm_rows) >= qualified and all(d["status"] == "delivered" for d in crm_rows)
                        and len(obs.dead_letters) >= sum(owed.values()))
                return obs if done else None

            try:
                obs = await eventually(settled, 90, "good touchpoints processed and poison dead-lettered")
            except AssertionError:
                obs = await observe(fault_db)
                print(cluster.diagnostics())
            listed = await asyncio.to_thread(
                subprocess.run, [handoff_bin(), "dlq", "list", "--json"], env=cluster.env, cwd=tmp_path,
                capture_output=True, text=True, timeout=60, check=False)
            scores = check_scores(obs, buyers, sender.acked, rules)
            assigned = check_assignments(obs, buyers, sender.acked)
            pushes = check_crm(obs, crm.requests)

    got = Counter((d["origin"].removeprefix("consumer:"), d["topic"]) for d in obs.dead_letters)
    record_figures("poison_messages", {
        "seed": seed, "poison_sent": 3 * PARTITIONS * len(BAD_DATA), "dead_letters_owed": sum(owed.values()),
        "dead_letters": len(obs.dead_letters), "by_group_topic": {f"{g}/{t}": n for (g, t), n in sorted(got.items())},
        **sender.stats.figures(), "processed": len(sender.acked_ids & obs.touchpoint_ids),
        "lost": len(scores.lost_events) + scores.under_counted,
        "duplicated": scores.over_counted + assigned.double_assigned + len(pushes.with_two_keys),
        "qualified": assigned.qualified, "crm": pushes.figures(), "seconds": round(time.monotonic() - started, 1)})

    assert got == Counter(owed), f"dead letters by (group, topic): {dict(got)}, expected {owed}"
    for row in obs.dead_letters:
        assert row["error"], row
        if str(row["event_id"] or "").startswith("poison-data"):
            assert "ValidationError" in row["error"] or "validation error" in row["error"], row["error"]
        elif str(row["event_id"] or "").startswith("poison-time"):
            assert "malformed message" in row["error"], row["error"]
        else:
            assert "malformed message" in row["error"] and "CloudEvents headers" in row["error"], row["error"]
    assert listed.returncode == 0, listed.stderr
    listed_rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert len(listed_rows) == len(obs.dead_letters)
    assert {r["id"] for r in listed_rows} == {d["id"] for d in obs.dead_letters}
    assert all(r["error"] and r["origin"].startswith("consumer:") for r in listed_rows)
    # ... and everything behind the poison went through.
    assert sender.stats.acknowledged == sender.stats.sent
    assert not scores.lost_events and not scores.wrong_scores, scores.wrong_scores[:10]
    assert not assigned.problems, assigned.problems[:10]
    assert not pushes.missing and not pushes.with_two_keys, pushes.figures()
