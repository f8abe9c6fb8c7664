"""Run ``handoff`` commands as real processes for end-to-end tests.

    with handoff_process(["up", "--no-demo"], env) as proc:     # waits for /readyz, SIGTERMs on exit
        httpx.get(proc.url + "/healthz")
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class HandoffProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    exit_code: int | None = None  # after the context: how the process ended on SIGTERM (-9: it had to be killed)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def handoff_bin() -> str:
    candidate = Path(sys.executable).with_name("handoff")
    return str(candidate) if candidate.exists() else "handoff"


@contextmanager
def handoff_process(args: list[str], env: Mapping[str, str], port: int, log_path: Path,
                    ready: str = "/readyz", timeout: float = 60.0) -> Iterator[HandoffProcess]:
    full_env = {**os.environ, **env, "HANDOFF_HTTP_PORT": str(port), "HANDOFF_HTTP_HOST": "127.0.0.1"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([handoff_bin(), *args], env=full_env, cwd=log_path.parent, stdout=log,
                                stderr=subprocess.STDOUT)
    handle = HandoffProcess(proc, port, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"handoff {' '.join(args)} exited with {proc.returncode}:\n{handle.log()}")
            try:
                if httpx.get(handle.url + ready, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"handoff {' '.join(args)} not ready after {timeout}s:\n{handle.log()}")
            time.sleep(0.1)
        yield handle
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                handle.exit_code = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                handle.exit_code = -9
