"""The processes a benchmark run starts, and what it reads about them (memory, CPU time).

    proc = await ServiceProcess.start("ingest", handoff_command("serve", "ingest"), env, port=port,
                                      log_dir=workdir)          # returns once GET /readyz answers 200
    proc.rss()                                                  # resident memory, bytes
    meter = CpuMeter({"ingest": proc.proc.pid}); meter.start(); ...; meter.stop()   # cores used
    await proc.stop()                                           # SIGTERM, then SIGKILL after a while
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def handoff_command(*args: str) -> list[str]:
    """``handoff <args>`` with this interpreter (works from a checkout without the console script)."""
    return python_module("services.cli", *args)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def spawn(argv: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its output appended to ``log_path`` (and ``env`` over this environment)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(list(argv), env={**os.environ, **(env or {})}, stdout=log, stderr=log,
                                cwd=str(cwd) if cwd else None)


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` from /proc (Linux); None where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class ServiceProcess:
    """One subprocess serving HTTP on ``port`` (a ``handoff`` service or the bare endpoint)."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @classmethod
    async def start(cls, name: str, argv: Sequence[str], env: Mapping[str, str], *, port: int, log_dir: Path,
                    ready_path: str = "/readyz", timeout: float = 60.0, cwd: Path | None = None) -> ServiceProcess:
        log_path = log_dir / f"{name}-{port}.log"
        proc = spawn(argv, log_path, env=env, cwd=cwd)
        service = cls(name, proc, port, log_path)
        try:
            await service.wait_ready(ready_path, timeout)
        except BaseException:
            await service.stop()
            raise
        return service

    async def wait_ready(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        async with httpx.AsyncClient(timeout=3.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; its log "
                                       f"({self.log_path}):\n{tail(self.log_path)}")
                try:
                    response = await client.get(f"http://127.0.0.1:{self.port}{path}")
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}"
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready after {timeout:.0f}s ({last}); log {self.log_path}:\n"
                           f"{tail(self.log_path)}")

    def rss(self) -> int | None:
        return rss_bytes(self.proc.pid)

    async def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)


def handoff_env(*, database_url: str, config_path: Path, port: int, kafka: str = "", prefix: str = "handoff.",
                secrets: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment of one ``handoff`` process (settings and the secrets its config names)."""
    env = {"HANDOFF_DATABASE_URL": database_url, "HANDOFF_KAFKA_BOOTSTRAP": kafka, "HANDOFF_CONFIG": str(config_path),
           "HANDOFF_HTTP_HOST": "127.0.0.1", "HANDOFF_HTTP_PORT": str(port), "HANDOFF_TOPIC_PREFIX": prefix,
           "HANDOFF_LOG_LEVEL": "WARNING", **(secrets or {})}
    env.update({f"HANDOFF_{k.upper()}": v for k, v in extra.items()})
    return env


# ------------------------------------------------------------------------------------------- CPU use
def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds ``pid`` has used so far (Linux /proc); None if it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cpu_seconds_of(command: str) -> float:
    """CPU seconds used so far by every live process named ``command`` (e.g. all PostgreSQL backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != command:
                continue
        except OSError:
            continue
        total += cpu_seconds(int(entry.name)) or 0.0
    return total


class CpuMeter:
    """Share of one core each named process used between ``start()`` and ``stop()``.

    meter = CpuMeter({"ingest": pid, ...}, include_postgres=True); meter.start(); ...; meter.stop()
    meter.shares   # {"ingest": 0.42, "postgres": 0.31, ...}  (1.0 = one core busy all the time)
    """

    def __init__(self, pids: Mapping[str, int], *, include_postgres: bool = False) -> None:
        self.pids = dict(pids)
        self.include_postgres = include_postgres
        self.shares: dict[str, float] = {}
        self.seconds: dict[str, float] = {}  # CPU seconds used between start() and stop()
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    def _read(self) -> dict[str, float]:
        out = {name: cpu_seconds(pid) or 0.0 for name, pid in self.pids.items()}
        out["bench (load generator)"] = cpu_seconds(os.getpid()) or 0.0
        if self.include_postgres:
            out["postgres (all backends)"] = cpu_seconds_of("postgres")
        busy, steal = machine_cpu_seconds()
        out["machine (all processes)"] = busy
        out[STEAL] = steal
        return out

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        elapsed = max(1e-6, time.monotonic() - self._t0)
        end = self._read()
        self.seconds = {k: end[k] - self._start.get(k, 0.0) for k in end}
        self.shares = {k: round(v / elapsed, 3) for k, v in self.seconds.items()}
        # What else ran meanwhile (other users of this machine): the measured numbers suffer from it.
        ours = sum(v for k, v in self.shares.items() if k not in ("machine (all processes)", STEAL))
        self.shares["others on this machine"] = round(max(0.0, self.shares["machine (all processes)"] - ours), 3)
        return self.shares


# The host's hypervisor running other guests while this machine's CPUs wanted to run (a VM): part of
# why the same code measures faster or slower from one hour to the next, reported beside the shares.
STEAL = "taken by the hypervisor (steal)"


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU seconds all CPUs have spent busy since boot, and those the hypervisor took (steal), from
    /proc/stat; (0.0, 0.0) where unreadable."""
    try:
        return cpu_times(Path("/proc/stat").read_text(), os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0


def cpu_times(proc_stat: str, ticks_per_second: int) -> tuple[float, float]:
    """(busy, steal) seconds from the text of /proc/stat: busy is user, nice, system, irq and softirq
    (not idle, iowait or steal); steal is the time the hypervisor ran something else.

    >>> cpu_times("cpu  100 5 20 900 7 1 2 30 0 0\\n", 100)
    (1.28, 0.3)
    """
    values = [int(v) for v in proc_stat.splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = (values + [0] * 7)[:7]
    steal = values[7] if len(values) > 7 else 0
    return (user + nice + system + irq + softirq) / ticks_per_second, steal / ticks_per_second
