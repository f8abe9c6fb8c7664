"""Section ``soak`` (``--soak``): memory under sustained load on the embedded default.

One ``handoff up``-like process (``handoff up --no-demo``: SQLite + the in-process bus, every
service) takes qualifying buyer journeys at a steady rate for 5 minutes (``--quick``: 40 s) while its
resident memory (RSS, from /proc) is sampled every 5 s. Reported: the growth from the end of a
1-minute warm-up to the end of the run. Goal: under 10 %.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

from services.bench import data
from services.bench.context import BenchContext
from services.bench.infra import free_port
from services.bench.loadgen import Paced
from services.bench.pipeline import BACKGROUND, LEAD_PATTERN, lead_requests
from services.bench.procs import ServiceProcess, handoff_command, handoff_env
from services.bench.receiver import CrmReceiver
from services.bench.results import Goal, Measurement

SECTION = "soak"
RATE = 300.0  # touchpoints/s: steady traffic the embedded default keeps up with, all the way to the CRM
GOAL = Goal("value", "<", 10.0)
CHUNK_SECONDS = 10.0


async def run(ctx: BenchContext) -> None:
    total = 40.0 if ctx.quick else 300.0
    warmup = 10.0 if ctx.quick else 60.0
    every = 2.0 if ctx.quick else 5.0
    crm = CrmReceiver(LEAD_PATTERN)
    await crm.start()
    process: ServiceProcess | None = None
    samples: list[tuple[float, int]] = []
    sent = 0
    try:
        config_path = ctx.workdir / "soak-config.yaml"
        data.write_config(config_path, data.bench_config(crm.url("/crm"), crm.url("/alerts")))
        port = free_port()
        ctx.say(SECTION, f"starting `handoff up --no-demo` (SQLite + embedded bus, every service) on port {port}")
        process = await ServiceProcess.start(
            "up", handoff_command("up", "--no-demo"),
            handoff_env(database_url=f"sqlite+aiosqlite:///{ctx.workdir / 'soak.db'}", config_path=config_path,
                        port=port, secrets=data.SECRETS), port=port, log_dir=ctx.workdir, cwd=ctx.workdir)
        ctx.say(SECTION, f"{RATE:,.0f} tp/s for {total:.0f}s; RSS every {every:.0f}s; growth measured after a "
                         f"{warmup:.0f}s warm-up")
        proc = process
        start = time.monotonic()
        stop = asyncio.Event()

        async def sample() -> None:
            next_print = start
            while not stop.is_set():
                rss = proc.rss()
                now = time.monotonic() - start
                if rss is not None:
                    samples.append((round(now, 1), rss))
                    if time.monotonic() >= next_print:
                        ctx.say(SECTION, f"t={now:5.0f}s RSS {rss / 2**20:,.1f} MiB, {len(crm.arrivals):,} leads "
                                         f"pushed to the CRM")
                        next_print += 30.0 if not ctx.quick else 10.0
                try:
                    await asyncio.wait_for(stop.wait(), every)
                except TimeoutError:
                    pass

        sampler = asyncio.create_task(sample())
        tag = f"soak{ctx.tag()}"
        leads_per_chunk = int(RATE * CHUNK_SECONDS / (BACKGROUND + 1))
        chunk = 0
        paced = Paced("127.0.0.1", port, connections=16)
        while time.monotonic() - start < total:
            requests = lead_requests(tag, chunk * leads_per_chunk, leads_per_chunk)
            await paced.run(requests, RATE)
            sent += sum(w for _, _, w in requests)
            chunk += 1
        stop.set()
        await sampler
    finally:
        if process is not None:
            await process.stop()
        await crm.stop()
    dead = _dead_letters(ctx.workdir / "soak.db")
    _report(ctx, samples, warmup, sent, len(crm.arrivals), dead,
            paced_errors=sum(1 for s in paced.sent if not 200 <= s.status < 300))


def _dead_letters(path: Path) -> dict[str, int]:
    """Dead letters per origin in the soak's database: a pipeline that dead-letters is not soaking."""
    try:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return dict(conn.execute("SELECT origin, count(*) FROM dead_letters GROUP BY origin").fetchall())
    except sqlite3.Error:
        return {}


def _report(ctx: BenchContext, samples: list[tuple[float, int]], warmup: float, sent: int, pushed: int,
            dead: dict[str, int], paced_errors: int) -> None:
    after = [s for s in samples if s[0] >= warmup]
    expected = sent // (BACKGROUND + 1)
    raw: dict[str, Any] = {"rate_tp_s": RATE, "touchpoints_sent": sent, "leads_expected": expected,
                           "leads_pushed": pushed, "dead_letters": dead, "non_2xx": paced_errors,
                           "samples": [{"t_s": t, "rss_bytes": r} for t, r in samples]}
    ctx.raw(SECTION).update(raw)
    flowing = expected == 0 or pushed >= 0.9 * expected
    if not flowing:
        ctx.say(SECTION, f"warning: only {pushed:,} of {expected:,} leads reached the CRM (dead letters: {dead}); "
                         "the pipeline was not flowing, so this soak exercised ingest and scoring only")
    ctx.add(Measurement(SECTION, "leads pushed to the CRM during the soak", float(pushed), "leads",
                        ceiling=float(expected), ceiling_name="sent", raw={"dead_letters": dead},
                        note="" if flowing else f"pipeline not flowing; dead letters {dead}"))
    if len(after) < 2:
        ctx.add(Measurement(SECTION, "RSS growth after warm-up", None, "%", goal=GOAL,
                            note="too few RSS samples (is /proc readable?)"))
        return
    base, end = after[0][1], after[-1][1]
    growth = (end - base) / base * 100
    ctx.say(SECTION, f"RSS {base / 2**20:,.1f} MiB after warm-up -> {end / 2**20:,.1f} MiB at the end "
                     f"({growth:+.1f} %); peak {max(r for _, r in samples) / 2**20:,.1f} MiB")
    ctx.add(Measurement(SECTION, "RSS at the end of warm-up", base / 2**20, "MiB"))
    ctx.add(Measurement(SECTION, "RSS at the end", end / 2**20, "MiB"))
    ctx.add(Measurement(SECTION, f"RSS growth after warm-up ({RATE:,.0f} tp/s)", growth, "%", goal=GOAL,
                        raw={"base_bytes": base, "end_bytes": end},
                        note="" if flowing else "the pipeline was not flowing (see leads pushed)"))
