"""A second process on the same database: python -m tests.contract.shared_worker MODE.

mode "lacking": a worker with no workflow registered (it must claim nothing).
mode "watch": a worker that has `watch_flow` (a step that sleeps `seconds`).
The world comes from the environment (WORKFLOW_TARGET_WORLD, ...). Prints READY once its
engine runs; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from worldflow import create_world, step, workflow


@step(name="watch_nap")
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


async def watch_flow(seconds: float) -> float:
    return await nap(seconds)


async def main() -> None:
    if sys.argv[1] == "watch":
        workflow(name="watch_flow")(watch_flow)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with create_world():
        print("READY", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
