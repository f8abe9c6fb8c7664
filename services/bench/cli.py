"""``handoff bench``: measure every hot path beside its ceiling, print a table, write JSON.

    handoff bench                                   # full: ~10 s windows, medians of 3 runs
    handoff bench --quick --sections ingest         # a short smoke run of one section
    handoff bench --soak                            # adds the 5-minute memory soak
    handoff bench --json bench-results/bench.json   # where the raw numbers go (the default)

It starts what it needs itself (a Tansu broker on a free port, fresh PostgreSQL databases at
``HANDOFF_BENCH_PG`` or postgresql://postgres@127.0.0.1:5432/postgres, SQLite files in a temp folder)
and drops it afterwards; a measurement whose infrastructure is missing is skipped with the reason.
The exit code is 0 when every section ran (goals missed or not: this is a measurement, not a test),
1 when a section failed with an error.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.bench.context import BenchContext
from services.bench.infra import Unavailable
from services.bench.procs import machine_cpu_seconds
from services.bench.results import (
    Measurement,
    load_average,
    machine_info,
    reference_loop_ms,
    render_table,
    write_json,
)
from services.settings import Settings

SECTIONS = ("ingest", "scoring", "routing", "e2e", "report", "soak")


def parse_sections(text: str, soak: bool) -> list[str]:
    """``"ingest, e2e"`` -> ["ingest", "e2e"] (known names, in the order given, once each; ``soak`` added
    by ``--soak``); ``ValueError`` naming the unknown ones and the choices."""
    names = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if soak and "soak" not in names:
        names.append("soak")
    return names


def bench_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        names = parse_sections(args.sections, bool(getattr(args, "soak", False)))
    except ValueError as exc:
        print(f"handoff bench: {exc}", file=sys.stderr)
        return 2
    if not names:
        print("handoff bench: no section to run; e.g. --sections ingest,scoring", file=sys.stderr)
        return 2
    # The progress lines are the output; the libraries' INFO chatter (alembic, httpx) would drown them.
    logging.getLogger().setLevel(logging.WARNING)
    for noisy in ("aiokafka", "services", "ingest", "scoring", "router", "notifier"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    return _run(bench(names, quick=bool(args.quick), json_path=Path(args.json_path), argv=sys.argv[1:]))


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    except ImportError:
        return asyncio.run(coro)


async def bench(names: list[str], *, quick: bool, json_path: Path, argv: list[str]) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="handoff-bench-"))
    ctx = BenchContext(quick=quick, workdir=workdir)
    started = datetime.now(UTC)
    load_start = load_average()
    loop_start = reference_loop_ms()
    steal_start, clock_start = machine_cpu_seconds()[1], time.monotonic()
    mode = "quick" if quick else f"full ({ctx.runs} runs per measurement, {ctx.duration:.0f}s windows)"
    ctx.say("bench", f"{mode}; sections {', '.join(names)}; work folder {workdir}")
    ctx.say("bench", f"machine speed: a reference Python loop takes {loop_start} ms (lower is faster)")
    cpus = os.cpu_count() or 1
    if load_start and load_start[0] > 0.5 * cpus:
        ctx.say("bench", f"warning: the machine is busy (load average {load_start[0]} on {cpus} CPUs): "
                         "the numbers will be lower and noisier than on an idle machine")
    statuses: dict[str, dict[str, Any]] = {}
    failed = False
    try:
        for name in names:
            t0 = time.monotonic()
            ctx.say(name, "starting")
            try:
                module = importlib.import_module(f"services.bench.{name}_section")
                await module.run(ctx)
                status: dict[str, Any] = {"status": "ok"}
            except Unavailable as exc:
                ctx.skip(name, "(section)", "", str(exc))
                status = {"status": "skipped", "reason": str(exc)}
            except Exception as exc:  # report it, go on with the next section
                failed = True
                detail = "".join(traceback.format_exception(exc))
                print(detail, file=sys.stderr, flush=True)
                ctx.say(name, f"FAILED: {type(exc).__name__}: {exc}")
                ctx.add(Measurement(name, "(section)", None, "", note=f"error: {type(exc).__name__}: {exc}"[:200]))
                status = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": detail}
            status["seconds"] = round(time.monotonic() - t0, 1)
            statuses[name] = status
            ctx.say(name, f"done in {status['seconds']:.0f}s ({status['status']})")
    finally:
        await ctx.close()
    load_end = load_average()
    loop_end = reference_loop_ms()
    steal = round((machine_cpu_seconds()[1] - steal_start) / max(1e-6, time.monotonic() - clock_start), 3)
    info = machine_info()
    document = {
        "command": "handoff bench " + " ".join(argv[1:] if argv[:1] == ["bench"] else argv),
        "quick": quick,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": {**info, "load_average_start": load_start, "load_average_end": load_end,
                    "reference_loop_ms_start": loop_start, "reference_loop_ms_end": loop_end,
                    "steal_cores": steal},
        "sections": {name: {**statuses.get(name, {}), "raw": ctx.sections.get(name, {})} for name in names},
        "measurements": [m.as_json() for m in ctx.measurements],
    }
    print()
    print(render_table(ctx.measurements))
    print()
    print(f"load average at start {load_start}, at end {load_end} ({info['cpu_count']} CPUs)")
    print(f"machine speed: the reference loop took {loop_start} ms at the start, {loop_end} ms at the end "
          "(lower is faster; compare runs in the same phase)")
    print(f"CPU taken by the hypervisor (steal) during the run: {steal:.2f} core on average")
    write_json(json_path, document)
    print(f"raw numbers: {json_path}")
    if failed:
        print(f"logs of the processes it started: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0
