"""A worker for composition crash tests: python compose_app.py (world from the
environment)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from worldflow import create_world, receive, workflow


@workflow(name="e2e_child_waits")
async def child_waits(n: int) -> dict[str, Any]:
    first = await receive()
    second = await receive()
    return {"n": n, "messages": [first, second]}


@workflow(name="e2e_parent")
async def parent(n: int) -> dict[str, Any]:
    return await child_waits(n)


async def main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with create_world():
        print("READY", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
