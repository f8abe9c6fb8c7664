"""HTTP lanes: concurrent sends, each on a client of its own with one keep-alive connection.

    lanes = HttpLanes(32, lambda: httpx.AsyncClient(timeout=10.0))     # made at bootstrap
    async with lanes.lane() as client:                                 # waits while all 32 are busy
        response = await client.post(url, content=body)
    await lanes.aclose()

    HttpLanes.shared(client)          # every send on one client, no limit (tests, one-off tools)

Why not one client with a pool of 32 connections: httpcore's pool (1.0.9) hands the same idle
connection to every request queued in one pass; all but one fail with ``ConnectionNotAvailable``,
queue again and trigger another pass over every connection (encode/httpcore#1035, still open). With
the delivery worker's round of concurrent pushes that cost 2.4 ms of CPU per request at 8 in flight
and 3.8-4.1 ms at 32, against 1.5 ms on a client with one connection, whatever the number in flight
(loopback receiver, this machine). A lane's requests run one after another on its connection, so a
sequence of requests (look up, then update) keeps its connection too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx


class HttpLanes:
    def __init__(self, count: int, make_client: Callable[[], httpx.AsyncClient]) -> None:
        if count < 1:
            raise ValueError(f"HttpLanes needs at least one lane, got {count}")
        self._clients = [make_client() for _ in range(count)]
        self._free: asyncio.Queue[httpx.AsyncClient] | None = asyncio.Queue()
        for client in self._clients:
            self._free.put_nowait(client)

    @classmethod
    def shared(cls, client: httpx.AsyncClient) -> HttpLanes:
        """Every send on ``client`` at once, however many: its owner limits and closes it."""
        lanes = cls.__new__(cls)
        lanes._clients = [client]
        lanes._free = None
        return lanes

    @property
    def count(self) -> int:
        """How many sends may be in flight at once (0: no limit, a shared client)."""
        return 0 if self._free is None else len(self._clients)

    @asynccontextmanager
    async def lane(self) -> AsyncIterator[httpx.AsyncClient]:
        """A client no other send is using until the block ends (waits for one if all are busy)."""
        if self._free is None:
            yield self._clients[0]
            return
        client = await self._free.get()
        try:
            yield client
        finally:
            self._free.put_nowait(client)

    async def aclose(self) -> None:
        """Close the lanes' clients (not a shared one: its owner closes it)."""
        if self._free is not None:
            await asyncio.gather(*(client.aclose() for client in self._clients))
