"""A step's completion appended before the workflow takes it (core.actor_live): once runs
of a workflow have ended at the same step call a few times in a row, its other step
completions go to the world first and the workflow takes them while the commit is on
its way (`core.eager.send_then`). The run's result and its log are the same; what the
workflow does on a result (its next step) still waits for the commit; a run that ends
elsewhere after all gets its end in an append of its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from worldflow import create_world, start, step, workflow
from worldflow.core.actor_live import END_CALL_STREAK
from worldflow.core.eager import send_then


# -- send_then --------------------------------------------------------------------------
async def test_then_runs_once_the_coroutine_waits_and_the_result_comes_back() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    order: list[str] = []

    async def append() -> int:
        order.append("sent")
        value = await fut
        order.append("committed")
        return value + 1

    asyncio.get_running_loop().call_soon(fut.set_result, 41)
    assert await send_then(append(), lambda: order.append("then")) == 42
    assert order == ["sent", "then", "committed"]


async def test_a_coroutine_that_does_not_wait_ends_before_then() -> None:
    order: list[str] = []

    async def append() -> str:
        order.append("done")
        return "ok"

    assert await send_then(append(), lambda: order.append("then")) == "ok"
    assert order == ["done", "then"]


async def test_an_error_of_then_comes_after_the_coroutine_has_ended() -> None:
    ended: list[bool] = []

    async def append() -> None:
        await asyncio.sleep(0)
        ended.append(True)

    def then() -> None:
        raise LookupError("no such call")

    with pytest.raises(LookupError, match="no such call"):
        await send_then(append(), then)
    assert ended == [True]


async def test_the_coroutines_own_error_wins() -> None:
    async def append() -> None:
        await asyncio.sleep(0)
        raise OSError("connection lost")

    def then() -> None:
        raise LookupError("no such call")

    with pytest.raises(OSError, match="connection lost"):
        await send_then(append(), then)


async def test_a_cancel_reaches_the_coroutine_where_it_waits() -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def append() -> None:
        try:
            await fut
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def caller() -> None:
        await send_then(append(), lambda: None)

    task = asyncio.get_running_loop().create_task(caller())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


# -- the engine -------------------------------------------------------------------------
class Recording:
    """Wraps a world's append_events: records each append's event types, and (gate set)
    holds each append until the test lets it through."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self.appends: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.original = world.append_events
        world.append_events = self.append_events

    async def append_events(self, run_id: str, records: Any, **kwargs: Any) -> None:
        records = list(records)
        self.appends.append([r.event_type for r in records])
        order.append("append")
        if self.gate is not None and kwargs.get("wait", True):
            await self.gate.wait()
        await self.original(run_id, records, **kwargs)


body_runs: list[int] = []
order: list[str] = []  # appends and the workflow's resumptions, in the order they came


@step(name="sf_add")
async def add(x: int) -> int:
    body_runs.append(x)
    return x + 1


@workflow(name="sf_three")
async def three(x: int) -> int:
    for _ in range(3):
        x = await add(x)
        order.append("resumed")
    return x


@workflow(name="sf_until")
async def until(x: int, stop: int) -> int:
    while x < stop:
        x = await add(x)
    return x


async def test_a_workflow_that_always_ends_at_the_same_call_keeps_one_commit_per_step(
        ) -> None:
    world = create_world("memory")
    async with world:
        recording = Recording(world)
        for i in range(END_CALL_STREAK + 3):
            recording.appends.clear()
            run = await start(three, 10 * i, world=world)
            assert await run.result(timeout=10) == 10 * i + 3
            # its creation aside: the three steps, the last with the run's end
            assert len(recording.appends) == 3, (i, recording.appends)
            assert recording.appends[-1][-1] == "run_completed"
        # the last run, after the streak: the first two completions were appended before
        # the workflow took them; the last was taken first, so that the end went with it
        assert order[-6:] == ["append", "resumed", "append", "resumed", "resumed", "append"]
        order.clear()
        recording.appends.clear()
        world2 = create_world("memory")  # another process knows no streak: taken first
        async with world2:
            Recording(world2)
            assert await (await start(three, 0, world=world2)).result(timeout=10) == 3
        assert order[-6:] == ["resumed", "append", "resumed", "append", "resumed", "append"]


async def test_a_run_that_ends_elsewhere_after_all_ends_in_an_append_of_its_own() -> None:
    world = create_world("memory")
    async with world:
        recording = Recording(world)
        for _ in range(END_CALL_STREAK + 1):  # a streak: runs end at the third step
            assert await (await start(until, 0, 3, world=world)).result(timeout=10) == 3
        recording.appends.clear()
        run = await start(until, 0, 2, world=world)  # ends at the second step
        assert await run.result(timeout=10) == 2
        assert recording.appends[-1] == ["run_completed"]
        assert [e.event_type for e in await world.list_events(run.run_id)][-3:] == [
            "step_started", "step_completed", "run_completed"]
        recording.appends.clear()
        run = await start(until, 0, 2, world=world)  # and the next one learns it
        assert await run.result(timeout=10) == 2
        assert recording.appends[-1][-1] == "run_completed"
        assert len(recording.appends) == 2


async def test_the_next_step_waits_for_the_commit_of_the_completion() -> None:
    """Sent first, the completion's commit is held: the workflow has taken the result
    (its next call is made) but the next step's body does not run until it commits."""
    world = create_world("memory")
    async with world:
        recording = Recording(world)
        for i in range(END_CALL_STREAK):
            assert await (await start(three, i, world=world)).result(timeout=10) == i + 3
        body_runs.clear()
        recording.gate = asyncio.Event()
        run = await start(three, 100, world=world)
        for _ in range(200):
            await asyncio.sleep(0.001)
            if len(body_runs) == 1 and recording.appends:
                break
        await asyncio.sleep(0.05)
        assert body_runs == [100]  # the first step ran; its completion is held
        recording.gate.set()
        assert await run.result(timeout=10) == 103
        assert body_runs == [100, 101, 102]
