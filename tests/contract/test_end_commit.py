"""A run that ends on what it was just given (a step's result, a step's failure, a
cancel) commits its end in the same append: one commit less per run, and no moment
where the log holds the completion but not the end, or the end without the completion.
A continue-as-new, which creates the next run before its end is recorded, does not.

The steps here never suspend: each attempt, started eagerly, has finished before its
actor looks at its mailbox again, so the step's start goes in the append of its outcome
(`LiveRun._start_new_calls`)."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from worldflow import continue_as_new, sleep, start, step, workflow
from worldflow.errors import StepFailedError


class AppendSpy:
    """The event types of each `append_events` call, by run, in call order."""

    def __init__(self, world: Any) -> None:
        self.calls: dict[str, list[list[str]]] = collections.defaultdict(list)
        original = world.append_events

        async def spy(run_id: str, records: Any, **options: Any) -> None:
            self.calls[run_id].append([r.event_type for r in records])
            await original(run_id, records, **options)

        world.append_events = spy


@step(name="ec_double")
async def double(x: int) -> int:
    return 2 * x


@step(name="ec_refuse", max_retries=0)
async def refuse(x: int) -> int:
    raise ValueError(f"no {x}")


@workflow(name="ec_two_steps")
async def two_steps(x: int) -> int:
    return await double(await double(x))


@workflow(name="ec_fails")
async def fails(x: int) -> int:
    return await refuse(x)


@workflow(name="ec_recovers")
async def recovers(x: int) -> int:
    try:
        return await refuse(x)
    except Exception:
        return await double(x)


@workflow(name="ec_chain")
async def chain(i: int) -> int:
    total = await double(i)
    if i < 2:
        continue_as_new(i + 1)
    return total


@workflow(name="ec_sleeps")
async def sleeps() -> None:
    await sleep(3600)


async def events_of(world: Any, run_id: str) -> list[str]:
    return [e.event_type for e in await world.list_events(run_id)]


async def test_a_run_ends_in_the_commit_of_the_step_it_ended_on(world: Any) -> None:
    spy = AppendSpy(world)
    run = await start(two_steps, 3, world=world)
    assert await run.result(timeout=30) == 12
    calls = spy.calls[run.run_id]
    assert calls[-1] == ["step_started", "step_completed", "run_completed"]
    assert ["run_completed"] not in calls
    assert await events_of(world, run.run_id) == [
        "run_created", "run_started", "step_started", "step_completed", "step_started",
        "step_completed", "run_completed"]
    record = await world.get_run(run.run_id)
    assert (record.status, record.steps_total, record.steps_completed) == ("completed", 2, 2)


async def test_a_run_failed_by_its_step_fails_in_the_same_commit(world: Any) -> None:
    spy = AppendSpy(world)
    run = await start(fails, 5, world=world)
    with pytest.raises(StepFailedError, match="no 5"):
        await run.result(timeout=30)
    assert spy.calls[run.run_id][-1] == ["step_started", "step_failed", "run_failed"]
    record = await world.get_run(run.run_id)
    assert (record.status, record.steps_failed) == ("failed", 1)


async def test_a_failure_the_workflow_catches_is_committed_before_it_goes_on(
        world: Any) -> None:
    spy = AppendSpy(world)
    run = await start(recovers, 4, world=world)
    assert await run.result(timeout=30) == 8
    calls = spy.calls[run.run_id]
    # without the next step: the workflow went on only once the failure was committed
    assert ["step_started", "step_failed"] in calls
    assert calls[-1] == ["step_started", "step_completed", "run_completed"]


async def test_a_continue_as_new_ends_after_the_completion_is_committed(
        world: Any) -> None:
    spy = AppendSpy(world)
    run = await start(chain, 0, world=world)
    assert await run.result(timeout=30) == 4
    calls = spy.calls[run.run_id]
    assert calls[-2:] == [["step_started", "step_completed"], ["run_continued"]]
    assert (await world.get_run(run.run_id)).status == "continued"


async def test_a_cancel_and_the_end_it_causes_are_one_commit(world: Any) -> None:
    spy = AppendSpy(world)
    run = await start(sleeps, world=world)
    for _ in range(300):
        if "wait_created" in await events_of(world, run.run_id):
            break
        await asyncio.sleep(0.02)
    assert await run.cancel() is True
    for _ in range(500):
        if (await world.get_run(run.run_id)).status == "cancelled":
            break
        await asyncio.sleep(0.02)
    last = spy.calls[run.run_id][-1]
    assert last[0] == "cancel_requested" and last[-1] == "run_cancelled", last
    assert (await world.get_run(run.run_id)).status == "cancelled"
