"""Workflows the CLI and web UI tests inspect (names start with `cli_`: they are global),
and `populate()`, which runs them on a world to leave one run of each kind behind.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from worldflow import (
    RunFailedError,
    StepFailedError,
    create_hook,
    create_world,
    get_writable,
    resume_hook,
    sleep,
    start,
    step,
    workflow,
)

if TYPE_CHECKING:
    from worldflow.core.world import World

OK_RUN = "cli-ok"
FAILED_RUN = "cli-failed"
HOOK_RUN = "cli-hook"
HOOK_TOKEN = "cli-token-1"
SECOND_HOOK_TOKEN = "cli-token-2"
TITLE = "weekly <report> [bold red]not markup[/]"
XSS = "<script>window.__xss = 1; alert('xss')</script>"
FAILURE_MESSAGE = "inventory service refused sku <b>42</b>"
RUN_IDS = (OK_RUN, FAILED_RUN, HOOK_RUN)


@step(name="cli_fetch")
async def fetch(n: int, delay: float) -> list[int]:
    await asyncio.sleep(delay)  # so that the two parallel steps overlap on the timeline
    async with get_writable() as stream:
        await stream.write({"fetched": n})
        await stream.write(b"raw bytes")
    return list(range(n))


@step(name="cli_reserve", max_retries=2, backoff=("10ms", 2, "50ms"))
async def reserve(sku: int) -> None:
    raise ValueError(FAILURE_MESSAGE.replace("42", str(sku)))


@workflow(name="cli_report")
async def report(title: str) -> dict[str, Any]:
    a, b = await asyncio.gather(fetch(2, 0.03), fetch(3, 0.05))
    await sleep("20ms")
    return {"title": title, "items": len(a) + len(b), "note": XSS}


@workflow(name="cli_order")
async def order(sku: int) -> None:
    await fetch(1, 0)
    await reserve(sku)


@workflow(name="cli_approval")
async def approval() -> Any:
    first = await create_hook(token=HOOK_TOKEN)
    await create_hook(token=SECOND_HOOK_TOKEN)  # never resumed: the run stays running
    return first


@workflow(name="cli_noop")
async def noop(i: int) -> int:
    return i


async def _until(predicate: Any, attempts: int = 1000) -> None:
    for _ in range(attempts):
        if await predicate():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{predicate} stayed false")


async def populate(world: World) -> None:
    """On a started `world`: a completed run (parallel steps, a sleep, a stream, `<script>`
    in its output), a failed run (a step retried twice) and a running run waiting on a
    hook that has received one payload."""
    await (await start(report, TITLE, world=world, run_id=OK_RUN)).result()
    failed = await start(order, 42, world=world, run_id=FAILED_RUN)
    try:
        await failed.result()
    except (StepFailedError, RunFailedError):
        pass
    await start(approval, world=world, run_id=HOOK_RUN)
    await _until(lambda: world.get_hook(HOOK_TOKEN))
    await resume_hook(HOOK_TOKEN, {"approved": True, "by": "<i>ann</i>"}, world=world)
    await _until(lambda: world.get_hook(SECOND_HOOK_TOKEN))


async def populate_file(path: str) -> None:
    async with create_world("sqlite", path=path) as world:
        await populate(world)


async def populate_postgres(url: str) -> None:
    async with create_world("postgres", connection_string=url) as world:
        await populate(world)


async def add_pending_runs(path: str, count: int, prefix: str = "cli-many") -> list[str]:
    """`count` runs created (not run: the world is only opened), one at a time."""
    world = create_world("sqlite", path=path)
    await world.open()
    try:
        return [(await start(noop, i, world=world, run_id=f"{prefix}-{i:04d}")).run_id
                for i in range(count)]
    finally:
        await world.close()
