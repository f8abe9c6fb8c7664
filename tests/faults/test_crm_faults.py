"""A CRM that is down for a while, then flaky for good: slow (beyond ``crm.timeout_seconds``),
rate-limiting (429 + Retry-After), failing (503), dropping connections, all interleaved with successes
(flapping). Every push is eventually delivered, none under two idempotency keys, Retry-After honoured.

The CRM is a loopback receiver behind a TCP proxy, so "down" is a refused connection, not an answer.
After the outage it answers in a fixed cycle (200, stall, 200, 200, 429, 200, 200, 503, 200, 200, drop,
200): a push may need several tries, and each try must carry the same key. The two notifier processes each keep their
own circuit breaker (it opens during the outage and lets pushes through again after its cool-down);
pushes wait in the ``deliveries`` table meanwhile, none is dropped.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import pytest

from tests.faults.checks import check_assignments, check_crm, eventually, observe, record_figures
from tests.faults.proxy import TcpProxy
from tests.faults.workload import Sender, make_buyers
from tests.support.infra import Broker
from tests.support.receiver import Received, Receiver, Reply
from tests.support.split import split_cluster, split_config

pytestmark = pytest.mark.e2e
DOWN_SECONDS = 6.0
CRM_TIMEOUT = 1.0
RETRY_AFTER = 2
CYCLE = ("ok", "slow", "ok", "ok", "rate_limited", "ok", "ok", "error", "ok", "ok", "dropped", "ok")


class FlakyCrm:
    """Answers in ``CYCLE`` order; records (arrival time, key, behaviour) of every request it gets."""

    def __init__(self) -> None:
        self.log: list[tuple[float, str, str]] = []
        self._turn = 0

    def respond(self, request: Received) -> Reply:
        kind = CYCLE[self._turn % len(CYCLE)]
        self._turn += 1
        self.log.append((time.monotonic(), request.headers.get("idempotency-key", ""), kind))
        if kind == "slow":
            return Reply(stall=True)  # never answers: the sender's timeout must fire
        if kind == "rate_limited":
            return Reply(429, b'{"error": "slow down"}', {"Retry-After": str(RETRY_AFTER)})
        if kind == "error":
            return Reply(503, b'{"error": "unavailable"}')
        if kind == "dropped":
            return Reply(drop=True)
        return Reply(200)


async def test_crm_down_then_slow_rate_limited_and_flapping(broker: Broker, fault_db: str, tmp_path: Path,
                                                            seed: int) -> None:
    rng = random.Random(seed)
    started = time.monotonic()
    crm = FlakyCrm()
    async with Receiver(crm.respond) as receiver, Receiver() as alerts:
        proxy = TcpProxy(int(receiver.url().rsplit(":", 1)[1].rstrip("/")))
        try:
            config = split_config(f"http://127.0.0.1:{proxy.port}/leads", alerts.url("/"), sla="1h",
                                  crm_timeout=CRM_TIMEOUT, crm_max_attempts=40)
            buyers = make_buyers(90, rng, prefix="m")
            async with split_cluster(tmp_path, database_url=fault_db, bootstrap=broker.bootstrap,
                                     config=config) as cluster:
                # The CRM is down (nothing listens) until pushes have failed against it for a while.
                sender = Sender(lambda: cluster.url("ingest"), rng=random.Random(seed), pause=(0.0, 0.05))
                stream = asyncio.create_task(sender.run(buyers, concurrency=6))

                async def failing() -> bool:
                    return any(d["target"] == "crm" and d["attempts"] > 0 for d in (await observe(fault_db)).deliveries)

                await eventually(failing, 60, "a first push to fail against the down CRM")
                await asyncio.sleep(DOWN_SECONDS)
                await proxy.start()
                up_at = time.monotonic()
                await stream
                qualified = sum(1 for b in buyers if b.qualifies)

                async def delivered() -> object:
                    obs = await observe(fault_db)
                    rows = [d for d in obs.deliveries if d["target"] == "crm"]
                    if len(rows) < qualified or any(d["status"] != "delivered" for d in rows):
                        return None
                    return obs

                try:
                    obs = await eventually(delivered, 150, "every CRM push to be delivered")
                except AssertionError:
                    obs = await observe(fault_db)
                    print(cluster.diagnostics())
        finally:
            await proxy.close()
        assigned = check_assignments(obs, buyers, sender.acked)
        pushes = check_crm(obs, receiver.requests)

    tries: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for at, key, kind in crm.log:
        tries[key].append((at, kind))
    # After a 429 with Retry-After, the next try of that key must wait at least that long.
    early = [key for key, seq in tries.items() for (at, kind), (nxt, _) in pairwise(seq)
             if kind == "rate_limited" and nxt - at < RETRY_AFTER - 0.3]
    answered_ok = {key for key, seq in tries.items() if any(kind == "ok" for _, kind in seq)}
    crm_rows = [d for d in obs.deliveries if d["target"] == "crm"]
    attempts = sum(d["attempts"] for d in crm_rows)
    kinds = Counter(kind for _, _, kind in crm.log)
    record_figures("crm_faults", {
        "seed": seed, "down_s_after_first_failure": DOWN_SECONDS, "crm_timeout_s": CRM_TIMEOUT,
        "pushes_expected": pushes.expected, "answers": dict(kinds), "crm": pushes.figures(),
        "delivered": sum(1 for d in crm_rows if d["status"] == "delivered"),
        "attempts_total": attempts, "attempts_refused_while_down": attempts - len(crm.log),
        "attempts_max": max((d["attempts"] for d in crm_rows), default=0),
        "retry_after_violations": len(early), "dead": sum(1 for d in crm_rows if d["status"] == "dead"),
        "lost": len(pushes.missing), "duplicated": len(pushes.with_two_keys),
        "all_delivered_s_after_up": round(max((at for at, _k, kind in crm.log if kind == "ok"), default=up_at)
                                          - up_at, 1),
        "seconds": round(time.monotonic() - started, 1)})

    assert not assigned.problems, assigned.problems[:10]
    assert assigned.qualified > 10 and len(crm_rows) == assigned.qualified
    assert all(d["status"] == "delivered" for d in crm_rows), [(d["status"], d["last_error"]) for d in crm_rows
                                                               if d["status"] != "delivered"][:5]
    assert not pushes.missing and not pushes.with_two_keys and not pushes.unexpected, pushes.figures()
    assert answered_ok >= {d["idempotency_key"] for d in crm_rows}, "a push marked delivered was never answered 2xx"
    assert attempts - len(crm.log) > 0, "no push was refused while the CRM was down"
    assert all(kinds[k] for k in set(CYCLE)), f"not every behaviour was exercised: {dict(kinds)}"
    assert not early, f"Retry-After not honoured for {early[:5]}"
    assert pushes.same_key_repeats > 0, "the faults should have caused retries under the same key"
