"""Section ``e2e``: latency from ingest's 2xx of the qualifying touchpoint to the CRM receiving the push.

Split mode, one process per service (``handoff serve ingest|scoring|router|notifier``) on a Tansu
broker and a fresh PostgreSQL database (``handoff migrate`` first), the CRM a loopback receiver here.
Points: 100 tp/s, 1,000 tp/s, then higher rates until one is not sustainable (see
:func:`services.bench.pipeline.judge`); ``--quick`` measures only a short 100 tp/s point.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from services.bench import data
from services.bench.context import BenchContext
from services.bench.infra import Broker, Unavailable, free_port, plain_dsn
from services.bench.kafka_chain import kafka_chain_latency
from services.bench.loadgen import Paced
from services.bench.pipeline import (
    LEAD_PATTERN,
    RatePoint,
    hop_breakdown,
    kafka_lag,
    lead_requests,
    measure_rate,
    wait_for_pushes,
)
from services.bench.procs import CpuMeter, ServiceProcess, handoff_command, handoff_env
from services.bench.receiver import CrmReceiver
from services.bench.results import Goal, Measurement
from services.bus.kafka import FETCH_MAX_WAIT_MS

SECTION = "e2e"
SERVICES = ("ingest", "scoring", "router", "notifier")
GOAL_P99_AT_1000 = Goal("value", "<", 250)
LADDER_UP = (2000, 3000, 4000, 6000, 8000)
LADDER_DOWN = (500, 250)


@dataclass
class Stack:
    """The running split-mode pipeline this section measures."""

    broker: Broker
    database_url: str
    prefix: str
    crm: CrmReceiver
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def ingest_port(self) -> int:
        return self.processes[0].port

    def cpu_meter(self) -> CpuMeter:
        pids = {f"{p.name}": p.proc.pid for p in self.processes}
        if self.broker.proc is not None:
            pids["broker (tansu)"] = self.broker.proc.pid
        return CpuMeter(pids, include_postgres=True)

    async def backlog(self) -> dict[str, int]:
        """Unconsumed messages per group, outbox rows not yet relayed, CRM pushes not yet sent."""
        import asyncpg

        t = lambda name: f"{self.prefix}{name}"  # noqa: E731
        topics = {"scoring": [t("touchpoints")], "router": [t("lead-events")],
                  "notifier": [t("assignments"), t("lead-events")]}
        # Consumer groups are named with the topic prefix (``<prefix>scoring``); older builds used the bare
        # name. A group that never committed shows the whole topic as lag, so the smaller figure is the one.
        prefixed = await kafka_lag(self.broker.bootstrap, {self.prefix + g: ts for g, ts in topics.items()})
        bare = await kafka_lag(self.broker.bootstrap, topics)
        lag = {g: min(prefixed[self.prefix + g], bare[g]) for g in topics}
        conn = await asyncpg.connect(plain_dsn(self.database_url))
        try:
            outbox = await conn.fetchval("SELECT count(*) FROM outbox")
            pending = await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'pending'")
        finally:
            await conn.close()
        return {**{f"lag:{g}": n for g, n in lag.items()}, "outbox": int(outbox), "deliveries_pending": int(pending)}

    async def transactions(self) -> int:
        """Transactions PostgreSQL counted for the pipeline's database so far (commits and rollbacks;
        a statement outside a transaction counts as one). The services' CPU follows their round trips,
        so the rate of these is worth watching beside the CPU."""
        import asyncpg

        conn = await asyncpg.connect(plain_dsn(self.database_url))
        try:
            return int(await conn.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"))
        finally:
            await conn.close()

    async def drain(self, timeout: float = 300.0) -> tuple[float, dict[str, int]]:
        """Wait until nothing is in flight anywhere; (seconds waited, what was left at the start)."""
        start = time.monotonic()
        first = await self.backlog()
        left = first
        while any(left.values()) and time.monotonic() - start < timeout:
            await asyncio.sleep(0.5)
            left = await self.backlog()
        if any(left.values()):
            raise RuntimeError(f"the pipeline did not drain within {timeout:.0f}s: {left}")
        return time.monotonic() - start, first


async def run(ctx: BenchContext) -> None:
    try:
        pg = await ctx.pg()
        broker = await Broker.start_new(ctx.workdir)
    except Unavailable as exc:
        for rate in (100, 1000):
            ctx.skip(SECTION, f"p99 at {rate:,} tp/s", "ms", str(exc), GOAL_P99_AT_1000 if rate == 1000 else None)
        return
    crm = CrmReceiver(LEAD_PATTERN)
    points: list[RatePoint] = []
    stack: Stack | None = None
    try:
        chains = await _kafka_ceiling(ctx, broker)
        await crm.start()
        stack = Stack(broker, await pg.create_database("bench_e2e", migrated=False), f"bench{ctx.tag()}.", crm)
        await _start(ctx, stack)
        await _warm_up(ctx, stack)
        duration = 8.0 if ctx.quick else 20.0
        plan = [100.0] if ctx.quick else [100.0, 1000.0]
        for planned in plan:
            points.append(await _point(ctx, stack, planned, 30.0 if planned == 100 and not ctx.quick else duration))
        if not ctx.quick:
            ladder = LADDER_UP if points[-1].sustainable else LADDER_DOWN
            for step in ladder:
                point = await _point(ctx, stack, float(step), duration)
                points.append(point)
                if point.sustainable != (ladder is LADDER_UP):
                    break
    finally:
        if stack is not None:
            for proc in reversed(stack.processes):
                await proc.stop()
        await crm.stop()
        broker.stop()
    _report(ctx, points, chains)


async def _kafka_ceiling(ctx: BenchContext, broker: Broker) -> dict[float, dict[str, Any]]:
    """The floor: 3 Kafka hops with no logic, consumers set like the services'
    (``fetch_max_wait_ms`` = :data:`services.bus.kafka.FETCH_MAX_WAIT_MS`); in a full run also with
    aiokafka's default 500 ms, to show what that setting buys."""
    out: dict[float, dict[str, Any]] = {}
    default: dict[float, dict[str, Any]] = {}
    for rate in [100.0] if ctx.quick else [100.0, 1000.0]:
        ctx.say(SECTION, f"ceiling: 3 Kafka hops with no logic at {rate:,.0f} msg/s (aiokafka, acks=all, "
                         f"fetch_max_wait_ms={FETCH_MAX_WAIT_MS}) ...")
        out[rate] = await kafka_chain_latency(broker.bootstrap, rate=rate, seconds=3.0 if ctx.quick else 5.0,
                                              fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
        ctx.say(SECTION, f"ceiling at {rate:,.0f} msg/s: p50 {_ms(out[rate]['p50_ms'])}, "
                         f"p99 {_ms(out[rate]['p99_ms'])}")
        if not ctx.quick:
            default[rate] = await kafka_chain_latency(broker.bootstrap, rate=rate, seconds=5.0,
                                                      fetch_max_wait_ms=500)
            ctx.say(SECTION, f"  the same with aiokafka's default fetch_max_wait_ms=500: "
                             f"p50 {_ms(default[rate]['p50_ms'])}, p99 {_ms(default[rate]['p99_ms'])}")
    ctx.raw(SECTION)["kafka_chain"] = {str(int(k)): v for k, v in out.items()}
    ctx.raw(SECTION)["kafka_chain_fetch_max_wait_500ms"] = {str(int(k)): v for k, v in default.items()}
    return out


async def _start(ctx: BenchContext, stack: Stack) -> None:
    config_path = ctx.workdir / "e2e-config.yaml"
    data.write_config(config_path, data.bench_config(stack.crm.url("/crm"), stack.crm.url("/alerts")))
    env = handoff_env(database_url=stack.database_url, config_path=config_path, port=0,
                      kafka=stack.broker.bootstrap, prefix=stack.prefix, secrets=data.SECRETS)
    ctx.say(SECTION, "`handoff migrate` on a fresh PostgreSQL database")
    migrate = await asyncio.to_thread(subprocess.run, handoff_command("migrate"), env={**os.environ, **env},
                                      cwd=ctx.workdir, capture_output=True, text=True, timeout=120)
    if migrate.returncode != 0:
        raise RuntimeError(f"handoff migrate failed: {migrate.stderr[-2000:]}")
    for service in SERVICES:
        port = free_port()
        ctx.say(SECTION, f"starting `handoff serve {service}` (port {port})")
        stack.processes.append(await ServiceProcess.start(
            service, handoff_command("serve", service), {**env, "HANDOFF_HTTP_PORT": str(port)}, port=port,
            log_dir=ctx.workdir, cwd=ctx.workdir))


async def _warm_up(ctx: BenchContext, stack: Stack) -> None:
    """Until a lead goes all the way through: consumer groups joined, connections and caches warm."""
    ctx.say(SECTION, "warming up: waiting for a first lead to go all the way to the CRM (consumer groups join)")
    tag = f"warm{ctx.tag()}"
    keys: list[str] = []
    for round_ in range(12):
        requests = lead_requests(tag, round_ * 5, 5)
        await Paced("127.0.0.1", stack.ingest_port, connections=4).run(requests, 200)
        keys += [str(t) for t, _, _ in requests if t is not None]
        await wait_for_pushes(stack.crm, keys, 10.0, idle_limit=10.0)
        if all(k in stack.crm.arrivals for k in keys[-5:]):
            waited, _ = await stack.drain()
            ctx.say(SECTION, f"pipeline live ({sum(k in stack.crm.arrivals for k in keys)} warm-up leads pushed; "
                             f"drained in {waited:.1f}s)")
            return
    raise RuntimeError("no warm-up lead reached the CRM within 2 minutes; see the service logs in "
                       f"{ctx.workdir}")


async def _point(ctx: BenchContext, stack: Stack, rate: float, seconds: float) -> RatePoint:
    ctx.say(SECTION, f"{rate:,.0f} tp/s for {seconds:.0f}s (5% are demo requests that qualify a lead) ...")
    meter = stack.cpu_meter()
    transactions, started = await stack.transactions(), time.monotonic()
    meter.start()
    point = await measure_rate("127.0.0.1", stack.ingest_port, stack.crm, rate=rate, seconds=seconds,
                               tag=f"e2e{ctx.tag()}")
    point.cpu = meter.stop()
    point.db_transactions_per_s = (await stack.transactions() - transactions) / (time.monotonic() - started)
    fmt = lambda v: "-" if v is None else f"{v:,.0f} ms"  # noqa: E731
    ctx.say(SECTION, f"{rate:,.0f} tp/s: sent {point.achieved:,.0f} tp/s, {point.pushed}/{point.leads} pushed; "
                     f"p50 {fmt(point.p50_ms)}, p95 {fmt(point.p95_ms)}, p99 {fmt(point.p99_ms)}; "
                     f"{'sustainable' if point.sustainable else 'NOT sustainable'} ({point.reason})")
    ctx.say(SECTION, "  CPU (share of one core): " + ", ".join(f"{k} {v:.2f}" for k, v in point.cpu.items())
            + f"; PostgreSQL transactions {point.db_transactions_per_s:,.0f}/s")
    point.drain_s, point.backlog_at_end = await stack.drain()
    point.hops = await hop_breakdown(stack.database_url, point.tag, point.sent_at, point.answered_at,
                                     stack.crm.arrivals)
    ctx.say(SECTION, "  where the time goes (p50 / p95): " + "; ".join(
        f"{name} {_ms(h['p50_ms'])} / {_ms(h['p95_ms'])}" for name, h in point.hops.items()))
    if point.drain_s > 1:
        ctx.say(SECTION, f"  drained the backlog left at the end in {point.drain_s:.1f}s: {point.backlog_at_end}")
    return point


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _report(ctx: BenchContext, points: list[RatePoint], chains: dict[float, dict[str, Any]]) -> None:
    raw: dict[str, Any] = ctx.raw(SECTION)
    raw["points"] = [p.as_json() for p in points]
    for point in points[:2]:
        rate = int(point.rate)
        chain = chains.get(point.rate, {})
        for name, value in (("p50", point.p50_ms), ("p95", point.p95_ms), ("p99", point.p99_ms)):
            ctx.add(Measurement(
                SECTION, f"{name} at {rate:,} tp/s", value, "ms", ceiling=chain.get(f"{name}_ms"),
                ceiling_name="3 Kafka hops", lower_is_better=True,
                goal=GOAL_P99_AT_1000 if rate == 1000 and name == "p99" else None,
                note="" if point.sustainable else f"not sustainable: {point.reason}",
                raw=point.as_json() if name == "p99" else {}))
    if ctx.quick:
        return
    kept_up = [p for p in points if p.sustainable]
    best = max(kept_up, key=lambda p: p.rate, default=None)
    if best is None:
        ctx.add(Measurement(SECTION, "highest sustainable rate", None, "tp/s",
                            note="no measured rate was sustainable"))
        return
    ctx.add(Measurement(SECTION, "highest sustainable rate", best.rate, "tp/s", raw=best.as_json(),
                        note=f"next rate up: {_next_failure(points, best)}"))
    for name, value in (("p50", best.p50_ms), ("p95", best.p95_ms), ("p99", best.p99_ms)):
        ctx.add(Measurement(SECTION, f"{name} at {int(best.rate):,} tp/s (highest sustainable)", value, "ms"))


def _next_failure(points: list[RatePoint], best: RatePoint) -> str:
    above = [p for p in points if p.rate > best.rate and not p.sustainable]
    if not above:
        return "not measured"
    first = min(above, key=lambda p: p.rate)
    return f"{first.rate:,.0f} tp/s not sustainable ({first.reason})"
