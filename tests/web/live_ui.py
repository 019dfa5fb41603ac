"""A web UI with a working engine behind it, for the browser tests: a memory world
(started: its engine runs the runs) holding a run that sleeps for a day and one that
waits for a hook payload.

    python -m tests.web.live_ui   prints the UI's URL line, then serves until SIGTERM
"""

from __future__ import annotations

import asyncio
from typing import Any

from worldflow import create_hook, create_world, sleep, start, workflow
from worldflow.cli.web.server import serve_web

SLEEPING_RUN = "sleeping-run"
HOOK_RUN = "approval-run"
HOOK_TOKEN = "approve-me"


@workflow
async def browser_sleeper() -> str:
    await sleep("1d")
    return "woke"


@workflow
async def browser_approval() -> Any:
    return await create_hook(token=HOOK_TOKEN)


async def main() -> None:
    async with create_world("memory") as world:
        await start(browser_sleeper, world=world, run_id=SLEEPING_RUN)
        await start(browser_approval, world=world, run_id=HOOK_RUN)
        await serve_web(world, "a live memory world", port=0, run_id=SLEEPING_RUN)


if __name__ == "__main__":
    asyncio.run(main())
