"""One statement in flight while the caller builds the next: the client's CPU and the server's work overlap.

A consumer's batch writes several tables in one transaction. Each statement costs this process CPU
to build its rows (folds, scores, JSON) and the database time to apply them; sent one after another,
each side waits while the other works, and on a machine of two cores one of them idles. A pipe sends
a statement and returns at once, so the caller builds the next statement's rows while the server
applies this one. A connection runs one statement at a time: a send first waits for the one in flight::

    async with StatementPipe(conn) as pipe:
        await pipe.send(touchpoints.insert(), rows)      # on its way to the server; returns at once
        lead_rows = fold_and_score(batch)                # runs while the server inserts the rows
        await pipe.send(leads.update(), lead_rows)       # waits for the insert, then sends
        created = await pipe.send(insert_returning)      # a future of its result, for later
    # leaving the block waits for the last statement
    rows = (await created).all()

A statement that fails raises from the next ``send``, ``execute``, ``wait`` or from the block's end,
so the transaction around it rolls back as it would have without the pipe. If the block itself
raises, the statement in flight is waited for (its own error dropped) before the exception goes on:
a rollback must not race a statement still running on the connection.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable


class StatementPipe:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self._flight: asyncio.Future[Result[Any]] | None = None

    async def send(self, statement: Executable, parameters: Any = None) -> asyncio.Future[Result[Any]]:
        """Wait for the statement in flight, then start this one and return without waiting for it.
        The future it returns gives the statement's result, whenever the caller wants it."""
        await self.wait()
        flight: asyncio.Future[Result[Any]] = asyncio.ensure_future(self.conn.execute(statement, parameters))
        self._flight = flight
        await asyncio.sleep(0)  # let the task write the statement to the server before the caller goes on
        return flight

    async def wait(self) -> Result[Any] | None:
        """The result of the statement in flight (None if there is none), once it is done."""
        flight, self._flight = self._flight, None
        return None if flight is None else await flight

    async def execute(self, statement: Executable, parameters: Any = None) -> Result[Any]:
        """Send ``statement`` and wait for its result."""
        await self.wait()
        return await self.conn.execute(statement, parameters)

    async def __aenter__(self) -> StatementPipe:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc_type is None:
            await self.wait()
            return
        flight, self._flight = self._flight, None
        if flight is not None:
            await asyncio.wait([flight])  # done either way; its error, if any, is not the one to report
            if not flight.cancelled():
                flight.exception()  # retrieved: asyncio would log it as never retrieved otherwise
