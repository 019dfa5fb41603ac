"""Workflow code that awaits something worldflow cannot deliver gets a clear
`WorkflowAwaitError`, instead of a cross-loop error or a run stuck `running` forever.

Runs on the memory and sqlite worlds, with a real engine in this process; the asyncpg
case uses a real connection to Postgres (127.0.0.1:5432, database `test`).
"""

from __future__ import annotations

import asyncio
import collections
import os
import uuid
from typing import Any

import pytest

from worldflow import RunStatus, sleep, start, step, workflow
from worldflow.errors import WorkflowAwaitError, WorldflowError

ran: collections.Counter[str] = collections.Counter()
#: objects of the test's own event loop, handed to workflow code by key
outside: dict[str, Any] = {}
PG_TEST_URL = os.environ.get("WORLDFLOW_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/test")


@step(name="a_count")
async def count_step(key: str) -> int:
    ran[key] += 1
    return ran[key]


@workflow(name="a_healthy")
async def healthy_wf(key: str) -> int:
    return await count_step(key)


async def assert_world_still_works(world: Any) -> None:
    assert not world.engine._root.done()
    run = await start(healthy_wf, uuid.uuid4().hex, world=world)
    assert await run.result(timeout=10) == 1


# -- futures of another event loop --------------------------------------------------
def test_workflow_await_error_is_a_worldflow_and_runtime_error() -> None:
    assert issubclass(WorkflowAwaitError, WorldflowError)
    assert issubclass(WorkflowAwaitError, RuntimeError)


@workflow(name="a_foreign_future")
async def foreign_future_wf(key: str) -> str:
    await count_step(key)
    return str(await outside[key])


@workflow(name="a_foreign_future_caught")
async def foreign_future_caught_wf(key: str) -> str:
    try:
        await outside[key]
    except WorkflowAwaitError as exc:
        message = str(exc)
    return f"{await count_step(key)}: {message}"


@workflow(name="a_foreign_in_task")
async def foreign_future_in_task_wf(key: str) -> list[Any]:
    async def waits_outside() -> Any:
        return await outside[key]

    return list(await asyncio.gather(count_step(key), waits_outside()))


async def test_future_of_another_loop_fails_the_run_with_a_clear_error(
        local_world: Any) -> None:
    key = uuid.uuid4().hex
    outside[key] = asyncio.get_running_loop().create_future()
    run = await start(foreign_future_wf, key, world=local_world)
    with pytest.raises(WorkflowAwaitError) as info:
        await run.result(timeout=10)
    message = str(info.value)
    assert "workflow 'a_foreign_future'" in message and "another event loop" in message
    assert "not" not in message or "@step" in message
    assert "different loop" not in message
    assert ran[key] == 1 and await run.status() == RunStatus.FAILED
    await assert_world_still_works(local_world)


async def test_future_of_another_loop_raises_at_the_await_in_workflow_code(
        local_world: Any) -> None:
    key = uuid.uuid4().hex
    outside[key] = asyncio.get_running_loop().create_future()
    run = await start(foreign_future_caught_wf, key, world=local_world)
    result = await run.result(timeout=10)
    assert result.startswith("1: workflow 'a_foreign_future_caught'")
    assert "inside a @step" in result


async def test_future_of_another_loop_in_a_workflow_task_fails_the_run(
        local_world: Any) -> None:
    key = uuid.uuid4().hex
    outside[key] = asyncio.get_running_loop().create_future()
    run = await start(foreign_future_in_task_wf, key, world=local_world)
    with pytest.raises(WorkflowAwaitError, match="another event loop"):
        await run.result(timeout=10)


@workflow(name="a_asyncpg")
async def asyncpg_wf(key: str) -> Any:
    await count_step(key)
    return await outside[key].fetchval("SELECT 1")


async def test_asyncpg_query_in_workflow_code_fails_the_run_with_a_clear_error(
        local_world: Any) -> None:
    import asyncpg

    key = uuid.uuid4().hex
    conn = await asyncpg.connect(PG_TEST_URL)
    outside[key] = conn
    # The query was sent before the workflow's await of its answer failed; asyncpg then
    # cancels it, and when the server's "canceling statement" comes back (or not: a
    # race) asyncpg reports it to the loop's exception handler: the outside
    # connection's business, not the run's.
    loop = asyncio.get_running_loop()
    handler = loop.get_exception_handler()

    def ignore_the_cancelled_query(loop: asyncio.AbstractEventLoop,
                                   context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), asyncpg.QueryCanceledError):
            return
        if handler is None:
            loop.default_exception_handler(context)
        else:
            handler(loop, context)

    loop.set_exception_handler(ignore_the_cancelled_query)
    try:
        run = await start(asyncpg_wf, key, world=local_world)
        with pytest.raises(WorkflowAwaitError) as info:
            await run.result(timeout=10)
        assert "inside a @step" in str(info.value)
        assert ran[key] == 1
        await assert_world_still_works(local_world)
    finally:
        await conn.close(timeout=5)
        loop.set_exception_handler(handler)


# -- waits nothing can complete -------------------------------------------------------
@workflow(name="a_blocked")
async def blocked_wf(key: str, kind: str) -> Any:
    await count_step(key)
    if kind == "event":
        await asyncio.Event().wait()
    elif kind == "queue":
        return await asyncio.Queue().get()
    elif kind == "future":
        return await asyncio.get_running_loop().create_future()
    elif kind == "gathered":  # two tasks that each wait for the other's event
        first, second = asyncio.Event(), asyncio.Event()

        async def wait_then_set(wait_for: asyncio.Event, then: asyncio.Event) -> None:
            await wait_for.wait()
            then.set()

        await asyncio.gather(wait_then_set(first, second), wait_then_set(second, first))
    return "not reached"


@pytest.mark.parametrize("kind", ["event", "queue", "future", "gathered"])
async def test_wait_nothing_can_complete_fails_the_run(local_world: Any, kind: str) -> None:
    key = uuid.uuid4().hex
    run = await start(blocked_wf, key, kind, world=local_world)
    with pytest.raises(WorkflowAwaitError) as info:
        await run.result(timeout=10)
    message = str(info.value)
    assert "workflow 'a_blocked'" in message and "cannot deliver" in message
    assert "test_awaits.py" in message  # where it waits
    assert ran[key] == 1 and await run.status() == RunStatus.FAILED
    await assert_world_still_works(local_world)


@workflow(name="a_event_set_by_step")
async def event_set_by_task_wf(key: str) -> str:
    ready = asyncio.Event()
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def producer() -> None:
        await count_step(key)
        await sleep("20ms")
        await queue.put(await count_step(key))
        ready.set()

    task = asyncio.create_task(producer())
    await ready.wait()
    value = await queue.get()
    await task
    try:
        await asyncio.wait_for(asyncio.Event().wait(), 0.05)
    except TimeoutError:
        return f"got {value}, then timed out"
    return "not reached"


async def test_events_and_queues_completed_by_workflow_code_still_work(
        local_world: Any) -> None:
    key = uuid.uuid4().hex
    run = await start(event_set_by_task_wf, key, world=local_world)
    assert await run.result(timeout=10) == "got 2, then timed out"
    assert ran[key] == 2


@workflow(name="a_blocked_after_sleep")
async def blocked_after_sleep_wf(key: str) -> str:
    await count_step(key)
    await sleep("30ms")
    await asyncio.Event().wait()
    return "not reached"


async def test_wait_nothing_can_complete_fails_the_run_after_replay(
        local_world: Any) -> None:
    local_world.engine.keep_alive = 0.0  # evicted while it sleeps: replayed on waking
    key = uuid.uuid4().hex
    run = await start(blocked_after_sleep_wf, key, world=local_world)
    with pytest.raises(WorkflowAwaitError, match="cannot deliver"):
        await run.result(timeout=10)
    assert ran[key] == 1  # the step ran once, and was replayed from the log
    events = [e.event_type for e in await local_world.list_events(run.run_id)]
    assert events.count("step_started") == 1 and events[-1] == "run_failed"


@workflow(name="a_thread")
async def thread_wf(key: str) -> str:
    await count_step(key)
    return await asyncio.to_thread(str, 1)


@workflow(name="a_socket")
async def socket_wf() -> Any:
    return await asyncio.open_connection("127.0.0.1", 5432)


@pytest.mark.parametrize("wf", [thread_wf, socket_wf])
async def test_threads_and_sockets_in_workflow_code_fail_the_run(local_world: Any,
                                                                 wf: Any) -> None:
    args = (uuid.uuid4().hex,) if wf is thread_wf else ()
    run = await start(wf, *args, world=local_world)
    with pytest.raises(WorkflowAwaitError, match="inside a @step"):
        await run.result(timeout=10)
