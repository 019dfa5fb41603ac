"""A worker for hook crash tests: python hook_app.py (world from the environment)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from worldflow import create_hook, create_world, workflow


@workflow(name="e2e_collect")
async def collect(token: str, count: int) -> list[Any]:
    received = []
    async for payload in create_hook(token):
        received.append(payload)
        if len(received) == count:
            return received
    return received


async def main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with create_world():
        print("READY", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
