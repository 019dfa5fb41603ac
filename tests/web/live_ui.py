"""A web UI with a working engine behind it, for the browser tests: a memory world
(started: its engine runs the runs) holding a run that sleeps for a day, one that
waits for a hook payload, one that waits for a message, and one that waits for a
message before running a step that takes a while.

    python -m tests.web.live_ui   prints the UI's URL line, then serves until SIGTERM
"""

from __future__ import annotations

import asyncio
from typing import Any

from worldflow import create_hook, create_world, receive, sleep, start, step, workflow
from worldflow.cli.web.server import serve_web

SLEEPING_RUN = "sleeping-run"
HOOK_RUN = "approval-run"
HOOK_TOKEN = "approve-me"
MESSAGE_RUN = "message-run"
MESSAGE_TOPIC = "orders"
STEP_RUN = "step-run"
#: how long the step of STEP_RUN runs: long enough to be seen running in the page
STEP_SECONDS = 2.5


@workflow
async def browser_sleeper() -> str:
    await sleep("1d")
    return "woke"


@workflow
async def browser_approval() -> Any:
    return await create_hook(token=HOOK_TOKEN)


@workflow
async def browser_message() -> Any:
    return await receive(topic=MESSAGE_TOPIC)


@step
async def browser_slow_step(order: Any) -> str:
    await asyncio.sleep(STEP_SECONDS)
    return f"packed {order['id']}"


@workflow
async def browser_stepper() -> str:
    order = await receive(topic="go")
    return await browser_slow_step(order)


async def main() -> None:
    async with create_world("memory") as world:
        await start(browser_sleeper, world=world, run_id=SLEEPING_RUN)
        await start(browser_approval, world=world, run_id=HOOK_RUN)
        await start(browser_message, world=world, run_id=MESSAGE_RUN)
        await start(browser_stepper, world=world, run_id=STEP_RUN)
        await serve_web(world, "a live memory world", port=0, run_id=SLEEPING_RUN)


if __name__ == "__main__":
    asyncio.run(main())
