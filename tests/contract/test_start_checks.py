"""`start()` refuses what cannot run, at once and with nothing stored, on every world:
arguments that do not fit the workflow's signature, and a run id (or dedup key) that
belongs to another workflow's run."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from worldflow import RunConflictError, sleep, start, step, workflow

body_runs: list[int] = []


@step(name="sc_add")
async def add(a: int, b: int) -> int:
    body_runs.append(a)
    return a + b


@workflow(name="sc_pair")
async def pair(a: int, b: int = 1, *, scale: int = 1) -> int:
    return scale * await add(a, b)


@workflow(name="sc_other")
async def other(a: int) -> int:
    return a


@workflow(name="sc_waiting")
async def waiting() -> None:
    await sleep("1h")


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((1, 2, 3), {}, "too many positional arguments"),
    ((), {}, "missing a required argument: 'a'"),
    ((1,), {"c": 2}, "unexpected keyword argument 'c'"),
    ((1,), {"a": 2}, "multiple values for argument 'a'"),
    ((1, 2, 3, 4), {"scale": 2}, "too many positional arguments"),
])
async def test_arguments_that_do_not_fit_the_signature_are_a_type_error_at_start(
        world: Any, args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    before = (await world.list_runs(limit=1000)).items
    with pytest.raises(TypeError, match=message) as info:
        await start(pair, *args, world=world, **kwargs)
    assert "workflow 'sc_pair'" in str(info.value)
    assert "(a: int, b: int = 1, *, scale: int = 1)" in str(info.value)
    assert (await world.list_runs(limit=1000)).items == before  # nothing stored


async def test_arguments_that_fit_start_a_run(world: Any) -> None:
    run = await start(pair, 2, scale=3, world=world)
    assert await run.result(timeout=30) == 9


async def test_a_run_id_of_another_workflow_is_a_conflict_naming_both(world: Any) -> None:
    run_id = f"sc-shared-{uuid.uuid4().hex[:8]}"
    first = await start(other, 7, world=world, run_id=run_id)
    assert await first.result(timeout=30) == 7
    with pytest.raises(RunConflictError) as info:
        await start(pair, 1, world=world, run_id=run_id)
    message = str(info.value)
    assert "'sc_other'" in message and "'sc_pair'" in message and run_id in message
    # the same workflow with the same id is still the idempotent start
    again = await start(other, 7, world=world, run_id=run_id)
    assert again.run_id == run_id
    stored = await world.get_run(run_id)
    assert stored is not None and stored.workflow_name == "sc_other"
    assert stored.status == "completed"


async def test_a_dedup_key_held_by_another_workflow_is_a_conflict(world: Any) -> None:
    key = f"sc-key-{uuid.uuid4().hex[:8]}"
    held = await start(waiting, world=world, dedup_key=key)  # live for an hour
    with pytest.raises(RunConflictError, match="dedup_key"):
        await start(pair, 1, world=world, dedup_key=key)
    assert await held.cancel()
