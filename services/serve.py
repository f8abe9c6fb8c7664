"""Run a bootstrapped container: the HTTP server and every background task, until a stop signal.

SIGTERM/SIGINT set ``stop``: the HTTP server stops accepting, consumers finish and commit the batch in
hand, the relay flushes what it holds, and connections close. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

import uvicorn

from services.http.app import create_app
from services.runtime import Container, background_tasks

log = logging.getLogger(__name__)
T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop when it is installed, else on asyncio's own loop.

        run_loop(serve_everything())

    uvloop roughly halves the loop's own cost per request (socket reads and writes, callbacks), which
    ingest, asyncpg and aiokafka all pay; without it (e.g. a platform it does not support) nothing
    changes but speed. ``asyncio.run`` never picks uvloop by itself, and uvicorn's ``loop="auto"``
    only applies when uvicorn creates the loop, which it does not here.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


class _Server(uvicorn.Server):
    """Uvicorn without its own signal handling: the process's ``stop`` event drives shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


# Young-generation collections after this many allocations (CPython's default is 700).
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the request path; call once the process is set up.

    A request batch allocates thousands of short-lived objects (touchpoints, events, rows), most of
    them freed by reference counting. With CPython's defaults the collector still ran every 700
    allocations and now and then walked every object of the process (the app, its libraries, about
    100,000 objects): measured, a third of ingest's time per touchpoint. ``gc.freeze()`` moves what
    exists at startup out of the collector's sight for good, and the larger threshold makes young
    collections rarer; cycles are still collected, a little later.
    """
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


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
    tune_gc()
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
