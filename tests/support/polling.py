"""Waiting for a condition by polling it (never a fixed sleep)::

    await eventually(lambda: crm.received(lead_id), 10, "the CRM push")     # the check's truthy result
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str,
                     interval: float = 0.1) -> Any:
    """Call ``check`` every ``interval`` seconds until it returns something truthy (returned); raise
    AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
