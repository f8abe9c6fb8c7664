"""A real HTTP/1.1 server on a loopback port that records requests and plays scripted answers.

    async with Receiver() as crm:
        crm.script(Reply(500), Reply(429, headers={"Retry-After": "7"}), Reply(stall=True), Reply(200))
        ... send to crm.url("/leads") ...
        crm.requests   # what arrived, in order

``Reply(stall=True)`` never answers (the client times out); ``Reply(drop=True)`` closes the
connection without answering. After the script, ``respond(request)`` (or a plain 200 ``{}``) answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False
    drop: bool = False


class Receiver:
    def __init__(self, respond: Callable[[Received], Reply] | None = None) -> None:
        self.requests: list[Received] = []
        self._script: list[Reply] = []
        self._respond = respond or (lambda _request: Reply())
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    def url(self, path: str = "/") -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}{path}"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
        request = Received(method, target, headers, body)
        self.requests.append(request)
        reply = self._script.pop(0) if self._script else self._respond(request)
        if reply.stall:
            await self._release.wait()
            return False
        if reply.drop:
            return False
        extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
        writer.write(
            f"HTTP/1.1 {reply.status} X\r\nContent-Type: application/json\r\nContent-Length: {len(reply.body)}\r\n"
            f"{extra}\r\n".encode("latin-1") + reply.body
        )
        await writer.drain()
        return True
