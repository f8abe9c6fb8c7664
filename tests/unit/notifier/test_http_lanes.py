"""HTTP lanes: at most one send per lane at a time, each lane keeping its one connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from notifier.http_lanes import HttpLanes


class CountingServer:
    """A keep-alive HTTP/1.1 server on loopback that counts connections and requests in flight."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CountingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                self.requests += 1
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                await asyncio.sleep(0.01)  # an answer that takes a while, so that sends overlap
                self.in_flight -= 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[CountingServer]:
    async with CountingServer() as s:
        yield s


def one_connection_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))


async def test_sends_beyond_the_lanes_wait_and_each_lane_keeps_its_connection(server: CountingServer) -> None:
    lanes = HttpLanes(4, one_connection_client)
    assert lanes.count == 4
    used: list[httpx.AsyncClient] = []

    async def send() -> None:
        async with lanes.lane() as client:
            assert client not in used, "a lane was lent to two sends at once"
            used.append(client)
            try:
                assert (await client.post(server.url(), content=b"{}")).status_code == 200
            finally:
                used.remove(client)

    try:
        for _ in range(3):
            await asyncio.gather(*(send() for _ in range(10)))
    finally:
        await lanes.aclose()
    assert server.requests == 30
    assert server.most_in_flight == 4
    assert server.connections == 4  # kept alive across the rounds: no reconnect per send


async def test_a_lane_is_given_back_when_its_send_fails(server: CountingServer) -> None:
    lanes = HttpLanes(1, one_connection_client)
    try:
        with pytest.raises(RuntimeError):
            async with lanes.lane():
                raise RuntimeError("the send failed")
        async with lanes.lane() as client:  # would wait forever if the failed send kept it
            assert (await asyncio.wait_for(client.get(server.url()), 5)).status_code == 200
    finally:
        await lanes.aclose()


async def test_a_shared_client_takes_every_send_at_once_and_stays_open(server: CountingServer) -> None:
    async with httpx.AsyncClient() as client:
        lanes = HttpLanes.shared(client)
        assert lanes.count == 0

        async def send() -> None:
            async with lanes.lane() as lent:
                assert lent is client
                await lent.get(server.url())

        await asyncio.gather(*(send() for _ in range(6)))
        await lanes.aclose()
        assert not client.is_closed  # its owner closes it
    assert server.most_in_flight == 6


async def test_closing_the_lanes_closes_their_clients() -> None:
    lanes = HttpLanes(3, one_connection_client)
    clients = []
    for _ in range(3):
        async with lanes.lane() as client:
            clients.append(client)
    await lanes.aclose()
    assert all(c.is_closed for c in clients)


def test_no_lanes_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one lane"):
        HttpLanes(0, one_connection_client)
