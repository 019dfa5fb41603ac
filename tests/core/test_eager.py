"""Step attempts start eagerly (worldflow.core.eager): the coroutine runs at once, up to
its first suspension, as a task of its own. These tests hold `start_eager` to what a
task made by `create_task` guarantees (its own current task and context, cancellation
where it waits, timeouts and cancel scopes that belong to it), and the engine to what an
eager attempt changes: a step that never suspends still runs as its own task, in a
context of its own, and a failure of the task around an attempt (not of the attempt)
stops the actor, whose run is replayed, instead of the engine.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import uuid
from typing import Any

import anyio
import pytest

from worldflow import Queue, RunStatus, start, step, workflow
from worldflow.core.eager import start_eager

var: contextvars.ContextVar[str] = contextvars.ContextVar("test_eager_var", default="unset")


# -- start_eager ------------------------------------------------------------------------
async def test_runs_at_once_as_its_own_task() -> None:
    caller = asyncio.current_task()
    seen: dict[str, Any] = {}

    async def body() -> int:
        seen["task"] = asyncio.current_task()
        var.set("inside")
        return 7

    task = start_eager(body(), name="eager body")
    assert "task" in seen  # ran before start_eager returned
    assert seen["task"] is task and task is not caller
    assert task.get_name() == "eager body"
    assert await task == 7
    assert var.get() == "unset"  # its context is a copy: nothing leaks into the caller
    assert asyncio.current_task() is caller


async def test_suspends_then_goes_on_as_the_same_task() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    steps: list[tuple[str, asyncio.Task[Any] | None]] = []

    async def body() -> int:
        steps.append(("before", asyncio.current_task()))
        value = await fut
        steps.append(("after", asyncio.current_task()))
        return value * 2

    task = start_eager(body(), name="waits")
    assert steps == [("before", task)]
    assert not task.done()
    await asyncio.sleep(0)
    fut.set_result(21)
    assert await task == 42
    assert steps == [("before", task), ("after", task)]


async def test_an_error_before_suspending_is_the_tasks() -> None:
    async def body() -> None:
        raise ValueError("at once")

    task = start_eager(body(), name="fails")
    with pytest.raises(ValueError, match="at once"):
        await task
    assert isinstance(task.exception(), ValueError)


async def test_cancelled_before_its_next_turn_it_is_cancelled_where_it_waits() -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    noted: list[str] = []

    async def body() -> None:
        try:
            await fut
        except asyncio.CancelledError:
            noted.append("cancelled while waiting")
            raise
        noted.append("went on")  # pragma: no cover - must not happen

    task = start_eager(body(), name="cancelled")
    task.cancel()  # no turn of the loop has passed
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert noted == ["cancelled while waiting"]


async def test_cancelled_while_suspended() -> None:
    started = asyncio.Event()

    async def body() -> None:
        started.set()
        await asyncio.sleep(30)

    task = start_eager(body(), name="sleeper")
    assert started.is_set()
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_timeouts_entered_before_suspending_belong_to_the_task() -> None:
    """`asyncio.timeout` and anyio's `fail_after` bind to the current task when entered:
    entered during the eager start, they must time out the step's task, never the
    caller (which here goes on sleeping, uncancelled)."""
    async def with_asyncio_timeout() -> str:
        try:
            async with asyncio.timeout(0.02):
                await asyncio.sleep(30)
        except TimeoutError:
            return "timed out"
        return "slept"  # pragma: no cover

    async def with_anyio_fail_after() -> str:
        try:
            with anyio.fail_after(0.02):
                await anyio.sleep(30)
        except TimeoutError:
            return "timed out"
        return "slept"  # pragma: no cover

    first = start_eager(with_asyncio_timeout(), name="asyncio timeout")
    second = start_eager(with_anyio_fail_after(), name="anyio timeout")
    await asyncio.sleep(0.1)  # raises CancelledError if a timeout hit this task
    assert await first == "timed out"
    assert await second == "timed out"


async def test_a_task_group_opened_before_suspending() -> None:
    async def body() -> list[int]:
        out: list[int] = []

        async def child(i: int) -> None:
            await asyncio.sleep(0.001 * i)
            out.append(i)

        async with asyncio.TaskGroup() as tg:
            for i in range(3):
                tg.create_task(child(i))
        return out

    assert await start_eager(body(), name="group") == [0, 1, 2]


# -- in the engine -----------------------------------------------------------------------
ran: collections.Counter[str] = collections.Counter()


@step(name="eager_whoami")
async def whoami(tag: str) -> str:
    task = asyncio.current_task()
    assert task is not None
    previous = var.get()
    var.set(tag)
    return f"{task.get_name()}|{previous}"


@workflow(name="eager_two_steps")
async def two_steps() -> list[str]:
    return [await whoami("a"), await whoami("b")]


async def test_a_step_that_never_suspends_runs_as_its_own_task(local_world: Any) -> None:
    run = await start(two_steps, world=local_world)
    # each attempt is a task named for its step, and a context variable one step sets
    # is not seen by the next (each runs in its own copy of the actor's context)
    assert await run.result(timeout=10) == ["step eager_whoami|unset",
                                            "step eager_whoami|unset"]


eager_queue = Queue("eager_test_queue", concurrency=2)


@step(name="eager_queued", queue=eager_queue)
async def queued_step(key: str) -> str:
    ran[key] += 1
    return "done"


@workflow(name="eager_queued_wf")
async def queued_wf(key: str) -> str:
    return await queued_step(key)


async def test_a_world_failure_around_an_attempt_replays_the_run(
        local_world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue slot of a step cannot be taken (the world raises): the run's actor
    stops and the run is replayed after the crash backoff; the engine goes on, and the
    body runs once, when the slot is granted."""
    local_world.engine.crash_retry_delay = 0.05
    real = local_world.acquire_slot
    failures = 0

    async def failing_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise OSError("storage unavailable")
        return await real(*args, **kwargs)

    monkeypatch.setattr(local_world, "acquire_slot", failing_once)
    key = uuid.uuid4().hex
    run = await start(queued_wf, key, world=local_world)
    assert await run.result(timeout=10) == "done"
    assert failures == 1
    assert ran[key] == 1
    assert (await run.status()) is RunStatus.COMPLETED
    assert not local_world.engine._root.done()
