"""Run a bootstrapped container: the HTTP server and every background task, until a stop signal.

SIGTERM/SIGINT set ``stop``: the HTTP server stops accepting, consumers finish and commit the batch in
hand, the relay flushes what it holds, and connections close. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Generator

import uvicorn

from services.http.app import create_app
from services.runtime import Container, background_tasks

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """Uvicorn without its own signal handling: the process's ``stop`` event drives shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now")
            raise SystemExit(1)
        log.info("received %s: finishing the work in hand, then stopping", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def run(
    container: Container,
    stop: asyncio.Event,
    *,
    host: str | None = None,
    port: int | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve HTTP on ``host:port`` (default from settings) and run the tasks until ``stop`` is set."""
    settings = container.settings
    app = create_app(container)
    config = uvicorn.Config(app, host=host or settings.http_host, port=settings.http_port if port is None else port,
                            log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=5)
    server = _Server(config)
    tasks = [asyncio.create_task(task(stop), name=getattr(task, "__qualname__", "task"))
             for task in background_tasks(container)]
    server_task = asyncio.create_task(server.serve(), name="http")
    try:
        while not server.started:
            if server_task.done():
                await server_task  # raises the bind error
                raise RuntimeError(f"the HTTP server could not start on {config.host}:{config.port}")
            await asyncio.sleep(0.02)
        if on_ready:
            bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else config.port
            on_ready(int(bound))
        done_task = asyncio.create_task(stop.wait())
        finished, _ = await asyncio.wait([done_task, server_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in finished:
            if task is not done_task and task.exception() is not None:
                log.error("%s failed: %r; stopping the process", task.get_name(), task.exception())
        stop.set()
        done_task.cancel()
    finally:
        server.should_exit = True
        stop.set()
        results = await asyncio.gather(server_task, *tasks, return_exceptions=True)
        for task, result in zip([server_task, *tasks], results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("%s ended with %r", task.get_name(), result)
