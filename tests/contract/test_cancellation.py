"""Cancellation reaches workflow code: CancelledError at the current await, compensation
steps in except/finally, on every world."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from worldflow import RunCancelledError, start, step, workflow

CALLS: collections.Counter[str] = collections.Counter()
STARTED: dict[str, asyncio.Event] = {}


@step(name="x_note")
async def note(what: str) -> str:
    CALLS[what] += 1
    return what


@step(name="x_slow", max_retries=3)
async def slow(key: str) -> str:
    CALLS[f"slow:{key}"] += 1
    STARTED.setdefault(key, asyncio.Event()).set()
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        CALLS[f"slow-cancelled:{key}"] += 1
        raise
    return "finished"


@workflow(name="x_compensates")
async def compensates(key: str) -> str:
    await note(f"{key}:booked")
    try:
        await slow(key)
    except asyncio.CancelledError:
        await note(f"{key}:undo-1")
        await asyncio.sleep(0.2)  # evicted here (keep_alive 0): replayed after the cancel
        await note(f"{key}:undo-2")
        raise
    return "not cancelled"


@workflow(name="x_swallows")
async def swallows(key: str) -> str:
    try:
        await slow(key)
    except asyncio.CancelledError:
        return await note(f"{key}:swallowed")
    return "not cancelled"


@workflow(name="x_sleeps")
async def sleeps(key: str) -> str:
    try:
        await asyncio.sleep(86_400)
    finally:
        await note(f"{key}:cleanup")
    return "woke"


async def wait_for_event(world: Any, run_id: str, event_type: str) -> None:
    for _ in range(2000):
        if any(e.event_type == event_type for e in await world.list_events(run_id)):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} never recorded {event_type}")


async def test_cancel_raises_in_the_workflow_and_compensations_run(world: Any) -> None:
    key = f"comp-{world.name}"
    STARTED.pop(key, None)
    world.engine.keep_alive = 0.0
    run = await start(compensates, key, world=world)
    for _ in range(2000):
        if key in STARTED:
            break
        await asyncio.sleep(0.01)
    await STARTED[key].wait()
    assert await run.cancel() is True
    with pytest.raises(RunCancelledError):
        await run.result(timeout=30)
    assert await run.status() == "cancelled"
    # the running attempt was cancelled and not retried; compensations ran once each
    assert CALLS[f"slow:{key}"] == 1
    assert CALLS[f"slow-cancelled:{key}"] == 1
    assert CALLS[f"{key}:booked"] == 1
    assert CALLS[f"{key}:undo-1"] == 1 and CALLS[f"{key}:undo-2"] == 1
    kinds = [e.event_type for e in await world.list_events(run.run_id)]
    assert kinds.count("cancel_requested") == 1
    assert kinds[-1] == "run_cancelled"
    steps = {s.step_name + ":" + s.correlation_id: s.status for s in await run.steps()}
    assert list(steps.values()) == ["completed", "failed", "completed", "completed"]


async def test_a_workflow_that_swallows_the_cancel_completes(world: Any) -> None:
    key = f"swallow-{world.name}"
    STARTED.pop(key, None)
    run = await start(swallows, key, world=world)
    for _ in range(2000):
        if key in STARTED:
            break
        await asyncio.sleep(0.01)
    await STARTED[key].wait()
    await run.cancel()
    assert await run.result(timeout=30) == f"{key}:swallowed"
    assert await run.status() == "completed"
    assert CALLS[f"slow:{key}"] == 1


async def test_cancel_reaches_an_evicted_run_that_sleeps_for_a_day(world: Any) -> None:
    key = f"sleeper-{world.name}"
    world.engine.keep_alive = 0.0
    run = await start(sleeps, key, world=world)
    await wait_for_event(world, run.run_id, "wait_created")
    for _ in range(500):  # evicted: no actor holds it
        if world.engine is None or run.run_id not in world.engine.actors:
            break
        await asyncio.sleep(0.01)
    await run.cancel()
    with pytest.raises(RunCancelledError):
        await run.result(timeout=30)
    assert CALLS[f"{key}:cleanup"] == 1
    kinds = [e.event_type for e in await world.list_events(run.run_id)]
    assert kinds.index("cancel_requested") < kinds.index("step_started")
    assert kinds[-1] == "run_cancelled"
    assert await run.cancel() is False  # already ended
