"""Flow control inside a workflow: bounded fan-out."""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable

__all__ = ["gather"]


async def gather(*calls: Awaitable[Any], limit: int | None = None,
                 return_exceptions: bool = False) -> list[Any]:
    """Like `asyncio.gather`, with at most `limit` of the calls running at once.

    Results come back in call order. In a workflow the calls start in call order as
    slots free up, so a replay starts them in the same order and resolves identically.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                              or limit < 1):
        raise ValueError(f"gather(limit=...) must be a positive integer, got {limit!r}")
    if limit is None or limit >= len(calls):
        return list(await asyncio.gather(*calls, return_exceptions=return_exceptions))
    slots = asyncio.Semaphore(limit)

    async def bounded(call: Awaitable[Any]) -> Any:
        try:
            async with slots:
                return await call
        finally:
            # a run evicted (or ended) while calls wait for a slot drops them unstarted:
            # close them, so that Python does not warn they were never awaited
            if inspect.iscoroutine(call):
                call.close()

    return list(await asyncio.gather(*(bounded(c) for c in calls),
                                     return_exceptions=return_exceptions))
