"""A loopback CRM that timestamps every push and says which bench lead it was about.

    crm = CrmReceiver(rb'"(e2e[0-9a-f]+-[0-9]+)@')    # group 1 of the first match names the lead
    await crm.start()
    crm.url("/crm")                                   # put it in the config's crm.url
    crm.arrivals["e2e1a2b-17"]                        # time.perf_counter() of the lead's first push
    await crm.stop()

Every request is answered ``200 {}`` at once (a fast, healthy CRM); the lead is found in the raw body
(the CRM body carries the lead's e-mail), so no JSON parsing slows the receiver down.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time


class CrmReceiver:
    def __init__(self, pattern: bytes) -> None:
        self.pattern = re.compile(pattern)
        self.arrivals: dict[str, float] = {}
        self.requests = 0
        self.unmatched = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the receiver first"
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()
        self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # type: ignore[arg-type]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:].strip())
                body = await reader.readexactly(length) if length else b""
                arrived = time.perf_counter()
                self.requests += 1
                match = self.pattern.search(body)
                if match:
                    self.arrivals.setdefault(match.group(1).decode(), arrived)
                else:
                    self.unmatched += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()
