"""A run that ends leaves no reference cycles behind: its workflow instance, its loop,
its tasks and its calls are freed as soon as the actor lets go of them, not at the
garbage collector's next full pass (which a steady stream of runs would otherwise
call for several times as often)."""

from __future__ import annotations

import asyncio
import gc
from typing import TYPE_CHECKING, Any

import pytest

from worldflow import gather, start, step, workflow
from worldflow.core.instance import WorkflowInstance, WorkflowLoop

from ..conftest import make_world

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@step(name="g_add")
async def add(a: int, b: int) -> int:
    return a + b


@workflow(name="g_steps")
async def steps_wf(n: int) -> int:
    total = 0
    for i in range(n):
        total = await add(total, i)
    parts = await gather(*(add(i, i) for i in range(3)))
    return total + sum(parts)


@pytest.fixture
def saved_garbage() -> Iterator[list[Any]]:
    """What the collector finds unreachable while the test runs (kept, not freed)."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("world_name", ["memory", "sqlite"])
async def test_ended_runs_leave_no_cycles(world_name: str, tmp_path: Path,
                                          request: pytest.FixtureRequest,
                                          saved_garbage: list[Any]) -> None:
    world = make_world(world_name, tmp_path, request)
    async with world:
        runs = [await start(steps_wf, n, world=world) for n in range(1, 6)]
        results = [await run.result(timeout=10) for run in runs]
        assert results == [n * (n - 1) // 2 + 6 for n in range(1, 6)]
        await asyncio.sleep(0.05)  # the actors finish their last turn
        gc.collect()
    left = [o for o in saved_garbage if isinstance(o, WorkflowInstance | WorkflowLoop)]
    assert left == []
