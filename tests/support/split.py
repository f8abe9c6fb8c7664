"""A split-mode cluster of real processes: ``handoff migrate``, then ``handoff serve <service>`` per member.

    config = split_config(crm_url=crm.url("/leads"), alerts_url=alerts.url("/"), sla="20s")
    async with split_cluster(tmp_path, database_url=pg, bootstrap=broker.bootstrap, config=config) as cluster:
        r = await client.post(cluster.url("ingest") + "/v1/touchpoints", ...)
        victim = cluster.member("scoring", 1)
        victim.kill9()                      # SIGKILL: no clean-up, no offset commit
        await cluster.restart(victim)       # same port, same log file (appended), waits for /readyz
        print(cluster.log_tail("scoring", 1))

Every member shares ``HANDOFF_DATABASE_URL`` (PostgreSQL), ``HANDOFF_KAFKA_BOOTSTRAP``, the topic
prefix and the generated ``HANDOFF_CONFIG``; each has its own ``HANDOFF_HTTP_PORT`` and log file
(``<workdir>/logs/<service>-<i>.log``). By default ingest runs once and every consumer group twice
(``scoring``, ``router``, ``notifier``), as the fault suite wants.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

import services
from tests.support.infra import free_port
from tests.support.pipeline import API_TOKEN, TEST_SECRETS
from tests.support.processes import handoff_bin

EXAMPLE_CONFIG = Path(services.__file__).parent / "handoff.example.yaml"
DEFAULT_REPLICAS: Mapping[str, int] = {"ingest": 1, "scoring": 2, "router": 2, "notifier": 2}


def split_config(
    crm_url: str,
    alerts_url: str,
    *,
    sla: str = "20s",
    reminders: tuple[float, ...] = (0.5,),
    on_breach: tuple[str, ...] = ("alert_rep",),
    crm_timeout: float = 2.0,
    crm_max_attempts: int = 30,
    decay_half_life_days: float = 0,
) -> dict[str, Any]:
    """The packaged example config with the CRM and the alert webhook at loopback receivers.

    ``alerts_url`` is a base ending in ``/``: the webhook gets ``<base>alerts`` (Slack and PagerDuty are
    left out, so each alert is exactly one request). Decay is off by default, so a lead's stored score
    can be compared exactly with the rules applied to what was sent.
    """
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["scoring"]["decay_half_life_days"] = decay_half_life_days
    data["sla"] = {"first_touch": sla, "reminders": list(reminders), "on_breach": list(on_breach)}
    data["crm"] = {"kind": "webhook", "url": crm_url, "secret_env": "CRM_SIGNING_SECRET",
                   "timeout_seconds": crm_timeout, "max_attempts": crm_max_attempts}
    data["alerts"] = {"webhook": {"url": alerts_url + "alerts"}}
    return data


@dataclass
class Member:
    """One ``handoff serve <service>`` process; survives kill -9 / restart with the same port and log."""

    service: str
    index: int
    port: int
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.proc.pid if self.proc else '?'})")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} of {self.name} at {time.strftime('%H:%M:%S')} =====\n"
                      .encode())
            log.flush()
            self.proc = subprocess.Popen([handoff_bin(), "serve", self.service], env=self.env,
                                         cwd=self.log_path.parent, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def kill9(self) -> None:
        """SIGKILL, as a crashed host or the OOM killer would: nothing is flushed, nothing committed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1
        with open(self.log_path, "ab") as log:
            log.write(f"===== kill -9 of {self.name} at {time.strftime('%H:%M:%S')} =====\n".encode())

    def terminate(self, timeout: float = 20.0, *, signalled: bool = False) -> None:
        """SIGTERM (unless ``signalled`` already: a second one means "exit now"), wait, then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if not signalled:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll ``/readyz`` without blocking the event loop (receivers in this loop keep answering)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    code = None if self.proc is None else self.proc.returncode
                    raise AssertionError(f"{self.name} exited with {code}:\n{self.log_tail()}")
                try:
                    if (await client.get(self.url + "/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]


@dataclass
class SplitCluster:
    workdir: Path
    database_url: str
    bootstrap: str
    config_path: Path
    topic_prefix: str
    env: dict[str, str]
    members: dict[str, list[Member]] = field(default_factory=dict)

    def member(self, service: str, index: int = 0) -> Member:
        return self.members[service][index]

    def url(self, service: str = "ingest", index: int = 0) -> str:
        return self.member(service, index).url

    def all_members(self) -> list[Member]:
        return [m for group in self.members.values() for m in group]

    def migrate(self) -> None:
        result = subprocess.run([handoff_bin(), "migrate"], env=self.env, cwd=self.workdir, capture_output=True,
                                timeout=120, check=False)
        if result.returncode != 0:
            raise AssertionError(f"handoff migrate failed ({result.returncode}):\n"
                                 f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}")

    async def start(self, timeout: float = 90.0) -> None:
        for member in self.all_members():
            member.spawn()
        await asyncio.gather(*(m.wait_ready(timeout) for m in self.all_members()))

    async def restart(self, member: Member, timeout: float = 60.0) -> None:
        """Start ``member`` again (after a kill) and wait until it answers ``/readyz``."""
        if member.alive:
            member.kill9()
        member.spawn()
        await member.wait_ready(timeout)

    def stop(self) -> None:
        """SIGTERM everyone at once (a clean shutdown), then wait; stragglers get SIGKILL."""
        signalled = [m for m in self.all_members() if m.alive]
        for member in signalled:
            if member.proc is not None:
                member.proc.send_signal(signal.SIGTERM)
        for member in signalled:
            member.terminate(signalled=True)

    def log_tail(self, service: str, index: int = 0, chars: int = 4000) -> str:
        return self.member(service, index).log_tail(chars)

    def logs(self) -> dict[str, str]:
        return {m.name: m.log_text() for m in self.all_members()}

    def grep(self, needle: str) -> list[str]:
        """Log lines (of every member) that contain ``needle``."""
        return [f"{name}: {line}" for name, text in self.logs().items()
                for line in text.splitlines() if needle in line]

    def diagnostics(self, chars: int = 1500) -> str:
        return "\n".join(f"--- {m.name} (starts {m.starts}, kills {m.kills}) ---\n{m.log_tail(chars)}"
                         for m in self.all_members())


def cluster_env(database_url: str, bootstrap: str, config_path: Path, topic_prefix: str,
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **TEST_SECRETS,
           "HANDOFF_DATABASE_URL": database_url, "HANDOFF_KAFKA_BOOTSTRAP": bootstrap,
           "HANDOFF_TOPIC_PREFIX": topic_prefix, "HANDOFF_CONFIG": str(config_path),
           "HANDOFF_API_TOKEN": API_TOKEN, "HANDOFF_HTTP_HOST": "127.0.0.1",
           "HANDOFF_KAFKA_PARTITIONS": "4", "HANDOFF_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    env.pop("HANDOFF_HTTP_PORT", None)
    return {**env, **(extra or {})}


def prepare_cluster(
    workdir: Path,
    *,
    database_url: str,
    bootstrap: str,
    config: Mapping[str, Any],
    replicas: Mapping[str, int] = DEFAULT_REPLICAS,
    env: Mapping[str, str] | None = None,
) -> SplitCluster:
    """Write the config, pick the ports and log files; start nothing (``split_cluster`` does)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    config_path = workdir / "handoff.yaml"
    config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    prefix = f"f{uuid.uuid4().hex[:8]}."
    base_env = cluster_env(database_url, bootstrap, config_path, prefix, env)
    cluster = SplitCluster(workdir, database_url, bootstrap, config_path, prefix, base_env)
    for service, count in replicas.items():
        cluster.members[service] = [
            Member(service, i, port, workdir / "logs" / f"{service}-{i}.log",
                   {**base_env, "HANDOFF_HTTP_PORT": str(port)})
            for i in range(count) for port in [free_port()]
        ]
    return cluster


@asynccontextmanager
async def split_cluster(
    workdir: Path,
    *,
    database_url: str,
    bootstrap: str,
    config: Mapping[str, Any],
    replicas: Mapping[str, int] = DEFAULT_REPLICAS,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[SplitCluster]:
    """Migrate the database, start every member, yield the cluster; SIGTERM everyone on exit."""
    cluster = prepare_cluster(workdir, database_url=database_url, bootstrap=bootstrap, config=config,
                              replicas=replicas, env=env)
    await asyncio.to_thread(cluster.migrate)  # receivers in this loop keep answering meanwhile
    try:
        await cluster.start()
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)
