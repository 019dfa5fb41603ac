"""Hostile identifiers and wrong arguments: rejected or stored safely, nothing else touched."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

import worldflow
from worldflow import (
    HookNotFoundError,
    RunCancelledError,
    RunStatus,
    create_hook,
    resume_hook,
    start,
    step,
    workflow,
)

SQL = "x'); DROP TABLE workflow_runs; --"
HUGE = "y" * 10_000


@workflow(name="b_hook_wf")
async def hook_wf(token: str) -> Any:
    return await create_hook(token)


@step(name="b_stream_step")
async def stream_step(name: str) -> None:
    async with worldflow.get_writable(name) as writer:
        await writer.write(name)


@workflow(name="b_stream_wf")
async def stream_wf(name: str) -> str:
    await stream_step(name)
    return name


async def count_runs(world: Any) -> int:
    page = await world.list_runs(limit=1000)
    return len(page.items)


async def test_sql_metacharacters_in_tokens_names_and_values_are_stored_safely(
        world: Any) -> None:
    token = f"{SQL}-{uuid.uuid4().hex}"
    run = await start(hook_wf, token, world=world)
    for _ in range(300):
        hook = await world.get_hook(token)
        if hook is not None:
            break
        await asyncio.sleep(0.01)
    assert await resume_hook(token, {"text": SQL}, world=world) == run.run_id
    assert await run.result(timeout=30) == {"text": SQL}
    run = await start(stream_wf, SQL, world=world)
    assert await run.result(timeout=30) == SQL
    assert [c async for c in run.stream(SQL)] == [SQL]
    assert (await world.get_run(run.run_id)).status == RunStatus.COMPLETED


async def test_huge_or_hostile_run_ids_are_rejected_and_nothing_is_stored(world: Any) -> None:
    before = await count_runs(world)
    for bad in (HUGE, SQL, "", "a b", "ünïcode"):
        with pytest.raises(ValueError, match="run_id"):
            await start(stream_wf, "s", world=world, run_id=bad)
    with pytest.raises(ValueError, match="dedup_key"):
        await start(stream_wf, "s", world=world, dedup_key=HUGE)
    assert await count_runs(world) == before


async def test_huge_hook_tokens_are_rejected(world: Any) -> None:
    with pytest.raises(HookNotFoundError):
        await resume_hook(HUGE, {}, world=world)
    run = await start(hook_wf, HUGE, world=world)
    with pytest.raises(worldflow.RunFailedError, match="hook token"):
        await run.result(timeout=30)
    with pytest.raises(ValueError, match="hook token"):
        await resume_hook("", {}, world=world)


async def test_huge_stream_name_fails_the_step_with_a_clear_error(world: Any) -> None:
    run = await start(stream_wf, HUGE, world=world)
    with pytest.raises(worldflow.StepFailedError, match="stream name"):
        await run.result(timeout=60)


step_starts: dict[str, list[float]] = {}


@step(name="b_slow", max_retries=0)
async def slow(key: str, i: int) -> int:
    step_starts.setdefault(key, []).append(time.time())
    await asyncio.sleep(0.05)
    return i


@workflow(name="b_many_steps")
async def many_steps(key: str) -> int:
    total = 0
    for i in range(20):
        total += await slow(key, i)
    return total


async def test_cancel_under_load_starts_no_step_after_the_cancel_is_recorded(
        world: Any) -> None:
    keys = [uuid.uuid4().hex for _ in range(30)]
    runs = [await start(many_steps, key, world=world) for key in keys]
    for _ in range(1000):  # cancel while steps are running everywhere
        if sum(len(step_starts.get(key, ())) for key in keys) >= 2 * len(keys):
            break
        await asyncio.sleep(0.01)
    await asyncio.gather(*(run.cancel() for run in runs[::2]))
    for key, run in zip(keys[::2], runs[::2], strict=True):
        with pytest.raises(RunCancelledError):
            await run.result(timeout=60)
        events = await world.list_events(run.run_id)
        assert events[-1].event_type == "run_cancelled"
        cancelled_at = events[-1].created_at.timestamp()
        assert all(t <= cancelled_at for t in step_starts.get(key, []))
        steps = await world.list_steps(run.run_id)
        assert len(steps) < 20
    for run in runs[1::2]:
        assert await run.result(timeout=120) == sum(range(20))
