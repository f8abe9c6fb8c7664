"""Section ``ingest``: touchpoints through the real ingest app, beside what the stack allows.

Servers run in their own processes (uvicorn, the settings of ``handoff serve``), the load generator in
this one, so they do not share a core. Measured side by side in each run:

- the bare endpoint (:mod:`services.bench.bare`): parses the same JSON, nothing else (the ceiling);
- ``handoff serve ingest`` embedded (SQLite + the in-process bus) and split (Kafka + PostgreSQL dedupe);
- aiokafka alone producing the same messages to the same broker with ``acks=all`` (split batch ceiling).

Single requests carry one touchpoint each (64 connections); batches carry 500 (8 connections).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from services.bench import data
from services.bench.context import BenchContext
from services.bench.infra import Broker, Unavailable, free_port, sqlite_database
from services.bench.loadgen import LoadResult, closed_loop, post
from services.bench.procs import STEAL, CpuMeter, ServiceProcess, handoff_command, handoff_env, python_module
from services.bench.results import Goal, Measurement, median

SECTION = "ingest"
SINGLE_CONNECTIONS = 64
BATCH_CONNECTIONS = 8
BATCH = 500
GOAL_SINGLE_EMBEDDED = Goal("ratio", ">=", 0.5)
GOAL_SINGLE_SPLIT = Goal("ratio", ">=", 0.7)
GOAL_BATCH_EMBEDDED = Goal("value", ">=", 20_000)
GOAL_BATCH_SPLIT = Goal("ratio", ">=", 0.6)


async def run(ctx: BenchContext) -> None:
    say = lambda message: ctx.say(SECTION, message)  # noqa: E731
    config_path = ctx.workdir / "ingest-config.yaml"
    data.write_config(config_path, data.bench_config("http://127.0.0.1:9/crm"))
    servers: dict[str, ServiceProcess] = {}
    broker: Broker | None = None
    split_problem: str | None = None
    try:
        say("starting the bare FastAPI endpoint (the ceiling)")
        port = free_port()
        servers["bare"] = await ServiceProcess.start(
            "bare", python_module("services.bench.bare", "--port", str(port)), {}, port=port,
            log_dir=ctx.workdir)
        say("starting `handoff serve ingest` on the embedded default (SQLite + in-process bus)")
        sqlite_url = await sqlite_database(ctx.workdir, "ingest-embedded.db")
        port = free_port()
        servers["embedded"] = await ServiceProcess.start(
            "ingest-embedded", handoff_command("serve", "ingest"),
            handoff_env(database_url=sqlite_url, config_path=config_path, port=port, secrets=data.SECRETS),
            port=port, log_dir=ctx.workdir, cwd=ctx.workdir)
        try:
            say("starting a Tansu broker and a PostgreSQL database for the split mode")
            broker = await Broker.start_new(ctx.workdir)
            pg_url = await (await ctx.pg()).create_database("bench_ingest")
            port = free_port()
            servers["split"] = await ServiceProcess.start(
                "ingest-split", handoff_command("serve", "ingest"),
                handoff_env(database_url=pg_url, config_path=config_path, port=port, kafka=broker.bootstrap,
                            prefix=f"bench{ctx.tag()}.", secrets=data.SECRETS),
                port=port, log_dir=ctx.workdir, cwd=ctx.workdir)
        except Unavailable as exc:
            split_problem = str(exc)
            say(f"split mode skipped: {split_problem}")
        results = await _measure(ctx, servers, broker)
    finally:
        for server in servers.values():
            await server.stop()
        if broker is not None:
            broker.stop()
    _report(ctx, results, split_problem)


Results = dict[str, list[Any]]


async def _measure(ctx: BenchContext, servers: dict[str, ServiceProcess], broker: Broker | None) -> Results:
    results: Results = {}
    messages = _kafka_messages(ctx.tag()) if broker is not None else []
    for run in range(ctx.runs):
        for kind in ("single", "batch"):
            for mode, server in servers.items():
                say = f"run {run + 1}/{ctx.runs}: {kind} touchpoints -> {mode}"
                ctx.say(SECTION, f"{say} for {ctx.duration:.0f}s ...")
                meter = CpuMeter({"server": server.proc.pid}, include_postgres=mode == "split")
                meter.start()
                result = await _load(ctx, server.port, kind)
                cpu = meter.stop()
                per_request = 1e6 * meter.seconds["server"] / max(1, result.completed)
                figures = {**result.as_json(), "cpu_share": cpu, "server_cpu_us_per_request": round(per_request, 1),
                           "server_cpu_us_per_touchpoint": round(per_request / (1 if kind == "single" else BATCH), 1)}
                results.setdefault(f"{kind}/{mode}", []).append(figures)
                unit = "req/s" if kind == "single" else "tp/s"
                rate = result.rate if kind == "single" else result.item_rate
                bad = {k: v for k, v in result.statuses.items() if not 200 <= k < 300}
                ctx.say(SECTION, f"{say}: {rate:,.0f} {unit}; server CPU {cpu['server']:.2f} core, "
                                 f"{figures['server_cpu_us_per_touchpoint']:,.0f} µs per touchpoint; "
                                 f"others on this machine {cpu['others on this machine']:.2f} core, "
                                 f"{STEAL} {cpu[STEAL]:.2f}"
                        + (f" (non-2xx answers: {bad})" if bad else "")
                        + (f" ({result.errors} connection errors)" if result.errors else ""))
        if broker is not None:
            ctx.say(SECTION, f"run {run + 1}/{ctx.runs}: aiokafka alone, acks=all, same messages, "
                             f"{ctx.duration:.0f}s ...")
            figures = await aiokafka_alone(broker.bootstrap, f"bench-ceiling-{ctx.tag()}", messages,
                                           duration=ctx.duration, warmup=ctx.warmup)
            results.setdefault("aiokafka", []).append(figures)
            ctx.say(SECTION, f"run {run + 1}/{ctx.runs}: aiokafka alone: {figures['messages_per_s']:,.0f} msg/s")
    return results


async def _load(ctx: BenchContext, port: int, kind: str) -> LoadResult:
    tag = ctx.tag()  # fresh event ids every time: a repeat would be a (cheaper) duplicate
    if kind == "single":
        bodies = data.single_templates(tag)
        count = len(bodies)
        return await closed_loop(
            "127.0.0.1", port, lambda n: post("/v1/touchpoints", data.fill(bodies[n % count], n), data.AUTH),
            connections=SINGLE_CONNECTIONS, duration=ctx.duration, warmup=ctx.warmup)
    body = data.batch_template(tag, BATCH)
    return await closed_loop(
        "127.0.0.1", port, lambda n: post("/v1/touchpoints/batch", data.fill(body, n), data.AUTH),
        connections=BATCH_CONNECTIONS, duration=ctx.duration, warmup=ctx.warmup, items_per_request=BATCH)


def _kafka_messages(tag: str, count: int = 20 * BATCH) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """What ingest would produce for batch requests: (key, value, CloudEvents headers) per touchpoint."""
    import orjson

    from ingest.schemas import to_touchpoints
    from ingest.writer import to_event

    now = datetime.now(UTC)
    out = []
    for n in range(count // BATCH):
        payload = orjson.loads(data.fill(data.batch_template(tag, BATCH), n))
        for tp in to_touchpoints(payload, "website", now, batch=True):
            event = to_event(tp)
            out.append((event.key.encode(), event.value(), event.wire_headers()))
    return out


async def aiokafka_alone(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]],
                         *, duration: float, warmup: float, concurrency: int = BATCH_CONNECTIONS,
                         chunk: int = BATCH, partitions: int = 6) -> dict[str, Any]:
    """aiokafka with the producer settings of ``KafkaBus`` (acks=all, linger 2 ms): ``concurrency`` tasks
    each send ``chunk`` messages and wait for all their acks, like ingest's batch requests."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=2,
                                max_batch_size=256 * 1024, request_timeout_ms=10_000)
    await producer.start()
    acked = 0
    start = time.perf_counter()
    window_start, stop_at = start + warmup, start + warmup + duration
    position = 0

    async def worker() -> None:
        nonlocal acked, position
        while time.perf_counter() < stop_at:
            futures = []
            for _ in range(chunk):
                key, value, headers = messages[position % len(messages)]
                position += 1
                futures.append(await producer.send(topic, key=key, value=value, headers=headers))
            await asyncio.gather(*futures)
            done = time.perf_counter()
            if window_start <= done < stop_at:
                acked += chunk

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await producer.stop()
    return {"messages_acked": acked, "elapsed_s": duration, "messages_per_s": round(acked / duration, 1),
            "concurrency": concurrency, "chunk": chunk}


def _rates(results: Results, key: str, field: str) -> list[float]:
    return [float(r[field]) for r in results.get(key, [])]


def _report(ctx: BenchContext, results: Results, split_problem: str | None) -> None:
    ctx.raw(SECTION).update({"runs": results, "single_connections": SINGLE_CONNECTIONS,
                             "batch_connections": BATCH_CONNECTIONS, "batch_size": BATCH})
    bare_single = _rates(results, "single/bare", "requests_per_s")
    bare_batch = _rates(results, "batch/bare", "items_per_s")
    ctx.add(Measurement(SECTION, "single, bare endpoint (ceiling)", median(bare_single), "req/s", runs=bare_single))
    ctx.add(Measurement(SECTION, "batch, bare endpoint (ceiling)", median(bare_batch), "tp/s", runs=bare_batch))
    emb_single = _rates(results, "single/embedded", "requests_per_s")
    emb_batch = _rates(results, "batch/embedded", "items_per_s")
    ctx.add(Measurement(SECTION, "single, embedded (SQLite)", median(emb_single), "req/s", ceiling=median(bare_single),
                        ceiling_name="bare", goal=GOAL_SINGLE_EMBEDDED, runs=emb_single, ceiling_runs=bare_single))
    ctx.add(Measurement(SECTION, "batch of 500, embedded (SQLite)", median(emb_batch), "tp/s",
                        ceiling=median(bare_batch), ceiling_name="bare", goal=GOAL_BATCH_EMBEDDED, runs=emb_batch,
                        ceiling_runs=bare_batch))
    _cpu_rows(ctx, results)
    if split_problem is not None:
        ctx.skip(SECTION, "single, split (Kafka + PostgreSQL)", "req/s", split_problem, GOAL_SINGLE_SPLIT)
        ctx.skip(SECTION, "batch of 500, split (Kafka + PostgreSQL)", "tp/s", split_problem, GOAL_BATCH_SPLIT)
        return
    split_single = _rates(results, "single/split", "requests_per_s")
    split_batch = _rates(results, "batch/split", "items_per_s")
    kafka = _rates(results, "aiokafka", "messages_per_s")
    ctx.add(Measurement(SECTION, "aiokafka alone, acks=all (ceiling)", median(kafka), "msg/s", runs=kafka))
    ctx.add(Measurement(SECTION, "single, split (Kafka + PostgreSQL)", median(split_single), "req/s",
                        ceiling=median(bare_single), ceiling_name="bare", goal=GOAL_SINGLE_SPLIT, runs=split_single,
                        ceiling_runs=bare_single))
    ctx.add(Measurement(SECTION, "batch of 500, split (Kafka + PostgreSQL)", median(split_batch), "tp/s",
                        ceiling=median(kafka), ceiling_name="aiokafka", goal=GOAL_BATCH_SPLIT, runs=split_batch,
                        ceiling_runs=kafka))


def _cpu_rows(ctx: BenchContext, results: Results) -> None:
    """Server CPU per touchpoint beside the bare endpoint's: unlike rates, it hardly depends on what else
    runs on the machine, so it shows where the app's own cost lies."""
    for kind in ("single", "batch"):
        bare = median(_rates(results, f"{kind}/bare", "server_cpu_us_per_touchpoint"))
        for mode, label in (("embedded", "embedded"), ("split", "split")):
            values = _rates(results, f"{kind}/{mode}", "server_cpu_us_per_touchpoint")
            if values:
                ctx.add(Measurement(SECTION, f"server CPU per touchpoint, {kind}, {label}", median(values), "µs",
                                    ceiling=bare, ceiling_name="bare", lower_is_better=True, runs=values))
