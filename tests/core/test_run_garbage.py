"""A run that ends leaves no reference cycles behind: its workflow instance, its loop,
its tasks and its calls are freed as soon as the actor lets go of them, not at the
garbage collector's next full pass (which a steady stream of runs would otherwise
call for several times as often)."""

from __future__ import annotations

import asyncio
import gc
import os
import traceback
from typing import TYPE_CHECKING, Any

import pytest

import worldflow
from worldflow import FatalError, gather, start, step, workflow
from worldflow.core.actor import RunActor
from worldflow.core.instance import WorkflowInstance, WorkflowLoop
from worldflow.errors import (
    FatalStepError,
    RunCancelledError,
    RunFailedError,
    WorkflowTimeoutError,
)

from ..conftest import make_world

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


_PACKAGE = os.path.dirname(worldflow.__file__) + os.sep


def _ours(error: BaseException) -> bool:
    """`error` went through worldflow's code or this test's (not only the test
    runner's: anyio's runner leaves cycles of its own behind, a test module's runner
    task cancelled at its end)."""
    return any(frame.filename.startswith(_PACKAGE) or frame.filename == __file__
               for frame in traceback.extract_tb(error.__traceback__))


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


@step(name="g_refuse")
async def refuse(x: int) -> int:
    raise FatalError(f"no {x}")


@workflow(name="g_fails_on_a_step")
async def fails_on_a_step(x: int) -> int:
    return await refuse(x)


@workflow(name="g_catches_a_step")
async def catches_a_step(x: int) -> int:
    try:
        return await refuse(x)
    except FatalError:
        return -x


@workflow(name="g_raises")
async def raises(x: int) -> int:
    await add(x, 1)
    raise ValueError(f"workflow {x} gives up")


@step(name="g_slow")
async def slow(x: int) -> int:
    await asyncio.sleep(30)
    return x


@workflow(name="g_waits")
async def waits(x: int) -> int:
    return await slow(x)


@workflow(name="g_times_out", timeout=0.05)
async def times_out(x: int) -> int:
    return await slow(x)


@pytest.mark.parametrize("world_name", ["memory", "sqlite"])
async def test_failed_runs_leave_no_cycles(world_name: str, tmp_path: Path,
                                           request: pytest.FixtureRequest,
                                           saved_garbage: list[Any]) -> None:
    """A failure's traceback holds the frames it went through, and through them the
    frames of the actor that called into the workflow: once the run is over they are
    let go, so that a failed run, or one that caught a step's failure, is freed at once
    like any other (a stream of failing runs would otherwise keep the collector busy);
    so is a run that timed out or was cancelled while a step ran."""
    world = make_world(world_name, tmp_path, request)
    async with world:
        failing = [await start(fails_on_a_step, i, world=world) for i in range(3)]
        giving_up = [await start(raises, i, world=world) for i in range(3)]
        catching = [await start(catches_a_step, i, world=world) for i in range(1, 4)]
        for run in failing:
            with pytest.raises(FatalStepError, match="no"):
                await run.result(timeout=10)
        for run in giving_up:
            with pytest.raises(RunFailedError, match="gives up"):
                await run.result(timeout=10)
        assert [await run.result(timeout=10) for run in catching] == [-1, -2, -3]
        timing_out = [await start(times_out, i, world=world) for i in range(3)]
        cancelled = [await start(waits, i, world=world) for i in range(3)]
        await asyncio.sleep(0.1)  # their steps are running
        for run in cancelled:
            await run.cancel()
        for run in timing_out:
            with pytest.raises(WorkflowTimeoutError):
                await run.result(timeout=10)
        for run in cancelled:
            with pytest.raises(RunCancelledError):
                await run.result(timeout=10)
        await asyncio.sleep(0.05)  # the actors finish their last turn
        gc.collect()
    left = [type(o).__name__ for o in saved_garbage
            if isinstance(o, WorkflowInstance | WorkflowLoop | RunActor)
            or (isinstance(o, BaseException) and _ours(o))]
    assert left == []
