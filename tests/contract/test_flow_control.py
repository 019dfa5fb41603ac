"""Timeouts, retry policies, bounded fan-out, dedup keys and retrying failed runs."""

from __future__ import annotations

import asyncio
import collections
import uuid
from typing import Any

import pytest

import worldflow
from worldflow import (
    RunStatus,
    StepFailedError,
    WorkflowTimeoutError,
    get_step_metadata,
    sleep,
    start,
    step,
    workflow,
)

counts: collections.Counter[str] = collections.Counter()
running: collections.Counter[str] = collections.Counter()
peak: collections.Counter[str] = collections.Counter()


@step(name="f_sleepy", timeout="100ms", max_retries=1, backoff="10ms")
async def sleepy(key: str, first_sleep: float) -> int:
    counts[key] += 1
    if get_step_metadata().attempt == 1:
        await asyncio.sleep(first_sleep)
    return get_step_metadata().attempt


@workflow(name="f_timeout_wf")
async def timeout_wf(key: str, first_sleep: float) -> Any:
    try:
        return await sleepy(key, first_sleep)
    except StepFailedError as exc:
        return exc.error_type


async def test_step_attempt_past_its_timeout_is_cancelled_and_retried(world: Any) -> None:
    key = uuid.uuid4().hex
    run = await start(timeout_wf, key, 5.0, world=world)
    assert await run.result(timeout=30) == 2
    events = await world.list_events(run.run_id)
    retrying = next(e for e in events if e.event_type == "step_retrying")
    assert retrying.event.error.type == "StepTimeoutError"
    assert "timed out after 0.1s" in retrying.event.error.message


@step(name="f_never_ends", timeout="50ms", max_retries=1, backoff="10ms")
async def never_ends() -> None:
    await asyncio.sleep(60)


@workflow(name="f_never_ends_wf")
async def never_ends_wf() -> str:
    try:
        await never_ends()
    except StepFailedError as exc:
        return f"{exc.error_type} after {exc.attempts}"
    return "?"


async def test_step_timeouts_exhaust_retries_with_a_timeout_error(world: Any) -> None:
    run = await start(never_ends_wf, world=world)
    assert await run.result(timeout=30) == "StepTimeoutError after 2"


@step(name="f_count")
async def count_step(key: str) -> None:
    counts[key] += 1


@workflow(name="f_slow_wf", timeout="300ms")
async def slow_wf(key: str) -> None:
    await count_step(key)
    await sleep("10s")
    await count_step(key)


async def test_workflow_past_its_timeout_fails_and_starts_nothing_more(world: Any) -> None:
    key = uuid.uuid4().hex
    run = await start(slow_wf, key, world=world)
    with pytest.raises(WorkflowTimeoutError, match=r"timed out after 0\.3s"):
        await run.result(timeout=30)
    assert await run.status() == RunStatus.FAILED
    assert counts[key] == 1


class Boom(Exception):
    pass


class Fine(Exception):
    pass


@step(name="f_policy", max_retries=3, backoff=("5ms", 1, "5ms"), no_retry_on=Boom)
async def policy_step(key: str, kind: str) -> None:
    counts[key] += 1
    raise Boom("no retry") if kind == "boom" else Fine("retry me")


@step(name="f_only_fine", max_retries=2, backoff="5ms", retry_on=[Fine])
async def only_fine(key: str, kind: str) -> None:
    counts[key] += 1
    raise Boom("not listed") if kind == "boom" else Fine("listed")


@workflow(name="f_policy_wf")
async def policy_wf(key: str, kind: str, which: str) -> str:
    try:
        await (policy_step(key, kind) if which == "policy" else only_fine(key, kind))
    except StepFailedError as exc:
        return exc.error_type
    return "?"


@pytest.mark.parametrize(("which", "kind", "attempts"), [
    ("policy", "boom", 1), ("policy", "fine", 4), ("only", "boom", 1), ("only", "fine", 3)])
async def test_retry_on_and_no_retry_on_pick_what_is_retried(
        world: Any, which: str, kind: str, attempts: int) -> None:
    key = uuid.uuid4().hex
    run = await start(policy_wf, key, kind, which, world=world)
    assert await run.result(timeout=30) == ("Boom" if kind == "boom" else "Fine")
    assert counts[key] == attempts


@step(name="f_tracked")
async def tracked(key: str, i: int) -> int:
    running[key] += 1
    peak[key] = max(peak[key], running[key])
    await asyncio.sleep(0.01)
    running[key] -= 1
    if i == 3:
        raise worldflow.FatalError("three")
    return i * i


@workflow(name="f_bounded_wf")
async def bounded_wf(key: str, n: int, limit: int) -> list[Any]:
    results = await worldflow.gather(*(tracked(key, i) for i in range(n)), limit=limit,
                                     return_exceptions=True)
    await sleep("50ms")
    return [r if isinstance(r, int) else f"error: {r}" for r in results]


async def test_bounded_gather_limits_concurrency_and_keeps_call_order(world: Any) -> None:
    world.engine.keep_alive = 0.0  # evict at the sleep: the result comes from a replay
    key = uuid.uuid4().hex
    run = await start(bounded_wf, key, 12, 3, world=world)
    result = await run.result(timeout=30)
    assert result == [i * i if i != 3 else "error: three" for i in range(12)]
    assert peak[key] == 3
    started = [e for e in await world.list_events(run.run_id) if e.event_type == "step_started"]
    assert [e.correlation_id for e in started] == [str(i) for i in range(1, 13)]


def test_bounded_gather_rejects_a_bad_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        asyncio.run(worldflow.gather(limit=0))


@workflow(name="f_dedup_wf")
async def dedup_wf(key: str) -> str:
    await sleep("200ms")
    return key


async def test_dedup_key_returns_the_live_run(world: Any) -> None:
    key = uuid.uuid4().hex
    first = await start(dedup_wf, "a", world=world, dedup_key=key)
    second = await start(dedup_wf, "b", world=world, dedup_key=key)
    assert second.run_id == first.run_id
    assert await second.result(timeout=30) == "a"
    third = await start(dedup_wf, "c", world=world, dedup_key=key)
    assert third.run_id != first.run_id
    assert await third.result(timeout=30) == "c"


flaky_switch: dict[str, bool] = {}


@step(name="f_before")
async def before_step(key: str) -> str:
    counts[f"{key}:before"] += 1
    return "before"


@step(name="f_switch", max_retries=0)
async def switch_step(key: str) -> str:
    counts[f"{key}:switch"] += 1
    if not flaky_switch.get(key):
        raise ValueError("not yet")
    return "switch"


@workflow(name="f_retry_wf")
async def retry_wf(key: str) -> list[str]:
    return [await before_step(key), await switch_step(key)]


async def test_retry_run_resumes_a_failed_run_without_rerunning_completed_steps(
        world: Any) -> None:
    key = uuid.uuid4().hex
    run = await start(retry_wf, key, world=world)
    with pytest.raises(StepFailedError):
        await run.result(timeout=30)
    flaky_switch[key] = True
    again = await worldflow.retry_run(run.run_id, world=world)
    assert again.run_id == f"{run.run_id}-retry1"
    assert await again.result(timeout=30) == ["before", "switch"]
    assert counts[f"{key}:before"] == 1
    assert counts[f"{key}:switch"] == 2
    assert await run.status() == RunStatus.FAILED


@step(name="f_held")
async def held(key: str) -> None:
    running[key] += 1
    peak[key] = max(peak[key], running[key])
    await asyncio.sleep(0.02)
    running[key] -= 1


@workflow(name="f_wide_wf")
async def wide_wf(key: str) -> None:
    await asyncio.gather(*(held(key) for _ in range(4)))


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_queue_concurrency_bounds_what_one_process_runs(
        kind: str, tmp_path: Any, request: pytest.FixtureRequest) -> None:
    from tests.conftest import make_world

    key = uuid.uuid4().hex
    async with make_world(kind, tmp_path, request, queue_concurrency=2) as world:
        runs = [await start(wide_wf, key, world=world) for _ in range(5)]
        for run in runs:
            await run.result(timeout=30)
    assert peak[key] == 2  # step bodies at once in this process
