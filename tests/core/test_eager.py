"""Step attempts start eagerly (worldflow.core.eager): the coroutine runs at once, up to
its first suspension, as a task of its own; one that cannot suspend runs to its end
without a task. These tests hold `start_eager` to what a task made by `create_task`
guarantees (its own current task and context, cancellation where it waits, timeouts and
cancel scopes that belong to it), `never_suspends` and `run_at_once` to what they
promise, and the engine to what an eager attempt changes: each attempt runs in a context
of its own, a step without a task of its own still holds to the step concurrency and
retries, and a failure of the task around an attempt (not of the attempt) stops the
actor, whose run is replayed, instead of the engine.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import inspect
import uuid
from typing import Any

import anyio
import pytest

from worldflow import Queue, RunStatus, start, step, workflow
from worldflow.core.eager import never_suspends, run_at_once, start_eager

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


# -- never_suspends, run_at_once --------------------------------------------------------
async def _returns() -> int:
    return 1


async def _awaits() -> int:
    await asyncio.sleep(0)
    return 1


async def _iterates(items: Any) -> list[Any]:
    return [item async for item in items]


async def _loops(items: Any) -> int:
    async for _ in items:
        pass
    return 1


async def _enters(manager: Any) -> int:
    async with manager:
        return 1


async def _uses_a_generator(n: int) -> int:
    return sum(i for i in range(n))  # (a generator of its own: not this frame's yield)


async def _async_generator() -> Any:
    yield 1


def _plain() -> int:
    return 1


def _returns_a_coroutine_too() -> Any:
    return _awaits()


class _Callable:
    async def __call__(self) -> int:
        return 1


def _returns_a_coroutine() -> Any:
    return _awaits()  # (a plain function whose coroutine suspends)


_MARKED: list[Any] = []
if hasattr(inspect, "markcoroutinefunction"):  # Python 3.12+: a plain function marked
    _MARKED.append((inspect.markcoroutinefunction(_returns_a_coroutine_too), False))


@pytest.mark.parametrize(("fn", "expected"), [
    (_returns, True), (_uses_a_generator, True),
    (_awaits, False), (_iterates, False), (_loops, False), (_enters, False),
    (_async_generator, False), (_plain, False), (_Callable(), False),
    (functools.partial(_returns), False), (_returns_a_coroutine, False), *_MARKED,
])
def test_never_suspends_only_for_an_async_def_without_suspension_points(
        fn: Any, expected: bool) -> None:
    assert never_suspends(fn) is expected


async def test_run_at_once_runs_to_the_end_in_a_copy_of_the_context() -> None:
    token = var.set("outside")
    seen: list[str] = []

    async def body() -> int:
        seen.append(var.get())
        var.set("inside")
        return 7

    try:
        assert run_at_once(body(), name="at once") is None
        assert seen == ["outside"]  # ran before run_at_once returned, seeing the caller's
        assert var.get() == "outside"  # and what it set stayed in its own copy
    finally:
        var.reset(token)


async def test_run_at_once_raises_what_the_coroutine_raises() -> None:
    async def body() -> int:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        run_at_once(body(), name="at once")


async def test_run_at_once_of_a_coroutine_that_suspends_goes_on_as_a_task() -> None:
    async def body() -> str:
        var.set("before")
        await asyncio.sleep(0.01)
        return var.get()  # the same context after its first suspension

    task = run_at_once(body(), name="went on")
    assert task is not None and task.get_name() == "went on"
    assert await task == "before"
    assert var.get() == "unset"


# -- in the engine -----------------------------------------------------------------------
ran: collections.Counter[str] = collections.Counter()


@step(name="eager_whoami")
async def whoami(tag: str) -> str:
    await asyncio.sleep(0)  # (a step that can suspend)
    task = asyncio.current_task()
    assert task is not None
    previous = var.get()
    var.set(tag)
    return f"{task.get_name()}|{previous}"


@step(name="eager_computes")
async def computes(tag: str) -> str:
    previous = var.get()
    var.set(tag)
    return previous


@workflow(name="eager_two_steps")
async def two_steps() -> list[str]:
    return [await whoami("a"), await computes("b"), await whoami("c"), await computes("d")]


async def test_each_attempt_runs_in_its_own_context(local_world: Any) -> None:
    """A step that can suspend runs as a task named for its step; one that cannot (no
    await in it) runs to its end in the actor's turn, without a task of its own. Either
    way each attempt has its own copy of the actor's context: a context variable one
    step sets is not seen by the next."""
    run = await start(two_steps, world=local_world)
    assert await run.result(timeout=10) == ["step eager_whoami|unset", "unset",
                                            "step eager_whoami|unset", "unset"]


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


@step(name="eager_fails_at_once", max_retries=2, backoff=0.01)
async def fails_at_once(key: str) -> str:
    ran[key] += 1
    raise RuntimeError(f"attempt {ran[key]} failed")


@workflow(name="eager_fails_wf")
async def fails_wf(key: str) -> str:
    return await fails_at_once(key)


async def test_a_step_without_a_task_is_retried_as_any_step(local_world: Any) -> None:
    key = uuid.uuid4().hex
    run = await start(fails_wf, key, world=local_world)
    with pytest.raises(Exception, match="attempt 3 failed"):
        await run.result(timeout=10)
    assert ran[key] == 3  # the first attempt and two retries, each once
    steps = await local_world.list_steps(run.run_id)
    assert [(s.status, s.attempt) for s in steps] == [("failed", 3)]


order: list[str] = []
release: dict[str, asyncio.Event] = {}  # by key, made by the test on its own loop


@step(name="eager_slow")
async def slow(key: str) -> str:
    order.append(f"slow {key} begins")
    await release[key].wait()
    order.append(f"slow {key} ends")
    return "slow"


@step(name="eager_fast")
async def fast(key: str) -> str:
    order.append(f"fast {key}")
    return "fast"


@workflow(name="eager_slow_and_fast")
async def slow_and_fast(key: str) -> list[str]:
    import worldflow

    return await worldflow.gather(slow(key), fast(key))


async def test_a_step_without_a_task_waits_for_a_step_slot(tmp_path: Any) -> None:
    """With every step slot taken (one slot, held by a step waiting on an event), a
    step that never suspends is not run at once beside it: it waits for the slot."""
    from worldflow import create_world

    order.clear()
    release["k"] = asyncio.Event()
    async with create_world("memory", queue_concurrency=1) as world:
        run = await start(slow_and_fast, "k", world=world)
        for _ in range(50):
            await asyncio.sleep(0.01)
        assert order == ["slow k begins"]  # the fast step waits for the one slot
        release["k"].set()
        assert await run.result(timeout=10) == ["slow", "fast"]
        assert order == ["slow k begins", "slow k ends", "fast k"]
