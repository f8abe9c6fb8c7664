"""A fast HTTP/1.1 load generator: raw asyncio protocols, keep-alive, N connections, no parsing beyond
the status line and Content-Length (so the generator costs far less than the server it measures).

    request = post("/v1/touchpoints", body, {"Authorization": "Bearer k"})
    result = await closed_loop("127.0.0.1", port, lambda n: request_for(n), connections=64, duration=10)
    result.rate                # completed 2xx requests per second inside the measured window

``closed_loop`` keeps every connection busy (throughput); ``Paced`` sends at a fixed rate whatever the
answers (latency under a given load) and reports when each answer came back.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


def post(path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    """The bytes of one ``POST`` request with a JSON body (keep-alive)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body


class ProtocolError(Exception):
    """The server answered something this client does not understand (or closed the connection)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends and waits for one complete response (its status)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ProtocolError(f"connection closed: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        marker = head.find(b"content-length:")
        if marker < 0:
            waiter.set_exception(ProtocolError("response without Content-Length"))
            return
        line_end = head.find(b"\r\n", marker)
        try:
            status = int(head[9:12])
            length = int(head[marker + 15:line_end if line_end >= 0 else len(head)])
        except ValueError:
            waiter.set_exception(ProtocolError(f"cannot parse the response head {head[:200]!r}"))
            return
        total = end + 4 + length
        if len(self.buffer) >= total:
            del self.buffer[:total]
            waiter.set_result(status)

    async def request(self, data: bytes) -> int:
        if self.closed or self.transport is None:
            raise ProtocolError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int) -> _Connection:
    _transport, protocol = await asyncio.get_running_loop().create_connection(_Connection, host, port)
    return protocol


@dataclass
class LoadResult:
    """What a closed-loop run measured inside its window (after the warm-up)."""

    requests: int = 0  # 2xx answers inside the window
    items: int = 0  # touchpoints carried by those requests
    elapsed: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)  # every answer, inside the window
    errors: int = 0  # connection failures
    completed: int = 0  # every 2xx answer, warm-up included (for CPU per request)

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    @property
    def item_rate(self) -> float:
        return self.items / self.elapsed if self.elapsed else 0.0

    def as_json(self) -> dict[str, object]:
        return {"requests_2xx": self.requests, "items_2xx": self.items, "elapsed_s": round(self.elapsed, 4),
                "requests_per_s": round(self.rate, 1), "items_per_s": round(self.item_rate, 1),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}, "errors": self.errors}


async def closed_loop(host: str, port: int, make_request: Callable[[int], bytes], *, connections: int,
                      duration: float, warmup: float = 0.5, items_per_request: int = 1) -> LoadResult:
    """Keep ``connections`` requests in flight for ``warmup + duration`` seconds; count the window only.

    ``make_request(n)`` gives the n-th request's bytes (n is unique within the run: use it for event ids).
    """
    conns = [await connect(host, port) for _ in range(connections)]
    result = LoadResult()
    counter = iter(range(1 << 62))
    start = time.perf_counter()
    window_start = start + warmup
    stop_at = window_start + duration

    async def worker(conn: _Connection) -> None:
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            try:
                status = await conn.request(make_request(next(counter)))
            except ProtocolError:
                result.errors += 1
                conn.close()
                try:
                    conn = await connect(host, port)
                except OSError:
                    await asyncio.sleep(0.05)
                continue
            done = time.perf_counter()
            if 200 <= status < 300:
                result.completed += 1
            if window_start <= done < stop_at:
                result.statuses[status] += 1
                if 200 <= status < 300:
                    result.requests += 1
                    result.items += items_per_request

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    result.elapsed = duration
    return result


@dataclass
class Sent:
    """One paced request: when it was due, when it was sent, when its answer came, and its status."""

    tag: object
    due: float
    sent: float = 0.0
    answered: float = 0.0
    status: int = 0


class Paced:
    """Open-loop load: touchpoints go out at ``rate`` per second whatever the answers; a request carrying
    ``weight`` touchpoints is due when the touchpoints before it are (``start + sum(weights) / rate``).

    When every connection is busy the request waits for one: the achieved rate then falls short of the
    target, which is how a run learns that a rate is not sustainable.
    """

    def __init__(self, host: str, port: int, *, connections: int = 32, tick: float = 0.002) -> None:
        self.host = host
        self.port = port
        self.connections = connections
        self.tick = tick
        self.sent: list[Sent] = []
        self.errors = 0

    async def run(self, requests: list[tuple[object, bytes, int]], rate: float,
                  on_answer: Callable[[Sent], None] | None = None) -> float:
        """Send ``requests`` ((tag, bytes, weight) triples) at ``rate`` touchpoints per second; returns the
        achieved rate (touchpoints per second of sending)."""
        idle: asyncio.Queue[_Connection] = asyncio.Queue()
        for _ in range(self.connections):
            idle.put_nowait(await connect(self.host, self.port))
        tasks: set[asyncio.Task[None]] = set()

        async def send(conn: _Connection, item: Sent, data: bytes) -> None:
            try:
                item.status = await conn.request(data)
            except ProtocolError:
                self.errors += 1
                conn.close()
                conn = await connect(self.host, self.port)
            item.answered = time.perf_counter()
            idle.put_nowait(conn)
            if on_answer is not None:
                on_answer(item)

        start = time.perf_counter()
        before = 0
        for tag, data, weight in requests:
            due = start + before / rate
            before += weight
            delay = due - time.perf_counter()
            if delay > self.tick:
                await asyncio.sleep(delay)
            conn = await idle.get()
            item = Sent(tag, due, sent=time.perf_counter())
            self.sent.append(item)
            task = asyncio.ensure_future(send(conn, item, data))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sending = time.perf_counter() - start
        if tasks:
            await asyncio.gather(*list(tasks))
        while not idle.empty():
            idle.get_nowait().close()
        last = requests[-1][2] if requests else 0
        return (before - last) / sending if sending > 0 and before > last else float(rate)
