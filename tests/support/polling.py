"""The one polling helper of the suite: wait for something a background task,
another process or NATS makes true, without a fixed sleep."""

from __future__ import annotations

import asyncio
import inspect
import time


async def eventually(check, timeout: float = 20.0, interval: float = 0.05, what: str = "the condition"):
    """Call `check()` (sync or async) until it returns a truthy value; return that value.

    Fails with an AssertionError once `timeout` seconds have passed without one."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
