"""A second process on the same database: python -m tests.contract.shared_worker MODE.

mode "lacking": a worker with no workflow registered (it must claim nothing).
mode "watch": a worker that has `watch_flow` (a step that sleeps `seconds`).
The world comes from the environment (WORKFLOW_TARGET_WORLD, ...). Prints READY once its
engine runs; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import sys

from tests.worker_process import serve_until_sigterm
from worldflow import step, workflow


@step(name="watch_nap")
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


async def watch_flow(seconds: float) -> float:
    return await nap(seconds)


if __name__ == "__main__":
    if sys.argv[1] == "watch":
        workflow(name="watch_flow")(watch_flow)
    serve_until_sigterm()
