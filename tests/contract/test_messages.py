"""Messages by run id: `send` from outside, `receive` in the workflow, on every world."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from worldflow import (
    NotInWorkflowError,
    RunFinishedError,
    RunNotFoundError,
    receive,
    send,
    start,
    step,
    workflow,
)

CALLS: collections.Counter[str] = collections.Counter()


@step(name="m_record")
async def record(value: Any) -> Any:
    CALLS[f"record:{value}"] += 1
    return value


@workflow(name="m_collect")
async def collect(count: int) -> list[Any]:
    return [await record(await receive()) for _ in range(count)]


@workflow(name="m_topics")
async def topics() -> list[Any]:
    b = await receive(topic="b")
    a1 = await receive(topic="a")
    a2 = await receive(topic="a")
    return [b, a1, a2]


@workflow(name="m_timeout")
async def with_timeout(timeout: float) -> list[Any]:
    first = await receive(timeout=timeout)
    second = await receive(timeout="1h")
    return [first, second]


@workflow(name="m_wait_then_receive")
async def wait_then_receive() -> Any:
    await record("before")
    await asyncio.sleep(0.5)
    return await receive(topic="late")


async def wait_status(world: Any, run_id: str, status: str) -> None:
    for _ in range(1000):
        run = await world.get_run(run_id)
        if run is not None and run.status == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} never became {status}")


async def test_messages_are_received_in_arrival_order_exactly_once(world: Any) -> None:
    CALLS.clear()
    world.engine.keep_alive = 0.0  # evicted while it waits: each message wakes it
    run = await start(collect, 3, world=world)
    await wait_status(world, run.run_id, "running")
    for value in ("m-one", "m-two", {"n": 3}):
        await send(run.run_id, value, world=world)
    assert await run.result(timeout=30) == ["m-one", "m-two", {"n": 3}]
    events = await world.list_events(run.run_id)
    received = [e.event for e in events if e.event_type == "message_received"]
    assert [e.topic for e in received] == ["default"] * 3
    assert CALLS["record:m-one"] == 1 and CALLS["record:m-two"] == 1
    assert await world.read_inbox(run.run_id) == []


async def test_messages_sent_before_receive_wait_by_topic(world: Any) -> None:
    run = await start(topics, world=world)
    await send(run.run_id, "a-first", topic="a", world=world)
    await send(run.run_id, "a-second", topic="a", world=world)
    await send(run.run_id, "b-only", topic="b", world=world)
    assert await run.result(timeout=30) == ["b-only", "a-first", "a-second"]


async def test_receive_returns_none_after_its_timeout(world: Any) -> None:
    world.engine.keep_alive = 0.0
    run = await start(with_timeout, 0.3, world=world)
    await wait_status(world, run.run_id, "running")
    for _ in range(1000):  # the first receive timed out, the second one waits
        kinds = [e.event_type for e in await world.list_events(run.run_id)]
        if kinds.count("wait_created") == 2:
            break
        await asyncio.sleep(0.01)
    await send(run.run_id, "after", world=world)
    assert await run.result(timeout=30) == [None, "after"]
    kinds = [e.event_type for e in await world.list_events(run.run_id)]
    assert kinds.count("wait_completed") == 1
    assert kinds.count("message_received") == 1


async def test_message_sent_to_an_evicted_run_is_kept_and_replayed_the_same(
        world: Any) -> None:
    CALLS.clear()
    world.engine.keep_alive = 0.0
    run = await start(wait_then_receive, world=world)
    await send(run.run_id, "early", topic="late", world=world)  # before receive is called
    assert await run.result(timeout=30) == "early"
    # evicted during the sleep, replayed on waking: the step ran once
    assert CALLS["record:before"] == 1
    events = await world.list_events(run.run_id)
    assert [e.event_type for e in events].count("message_received") == 1


async def test_send_to_unknown_or_ended_run_and_bad_message(world: Any) -> None:
    with pytest.raises(RunNotFoundError):
        await send("no-such-run", "x", world=world)
    run = await start(collect, 0, world=world)
    assert await run.result(timeout=30) == []
    with pytest.raises(RunFinishedError):
        await send(run.run_id, "x", world=world)
    live = await start(collect, 1, world=world)
    with pytest.raises(TypeError, match="message"):
        await send(live.run_id, object(), world=world)
    assert await world.read_inbox(live.run_id) == []
    await send(live.run_id, "ok", world=world)
    assert await live.result(timeout=30) == ["ok"]


async def test_receive_outside_a_workflow_is_refused() -> None:
    with pytest.raises(NotInWorkflowError):
        await receive()
