"""Failures in user code fail that run, never the worker: BaseExceptions raised by
workflows and steps, results that cannot be stored. Each test then starts a second run
on the same world, which must complete (the engine and its other runs carry on).

Runs on the memory and sqlite worlds, with a real engine in this process.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from typing import Any

import pytest

from worldflow import RunFailedError, RunStatus, start, step, workflow
from worldflow.core.serde import encode_value
from worldflow.errors import FatalError

ran: collections.Counter[str] = collections.Counter()

RAISED: dict[str, type[BaseException]] = {
    "SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt,
    "GeneratorExit": GeneratorExit}


@step(name="f_plain")
async def plain_step(x: int) -> int:
    return x + 1


@workflow(name="f_healthy")
async def healthy_wf(x: int) -> int:
    return await plain_step(x)


async def assert_world_still_works(world: Any) -> None:
    """The engine survived: a new run on the same world completes."""
    assert not world.engine._root.done()
    run = await start(healthy_wf, 41, world=world)
    assert await run.result(timeout=10) == 42


@step(name="f_base_exc", max_retries=3)
async def base_exception_step(key: str, kind: str) -> str:
    ran[key] += 1
    raise RAISED[kind](3) if kind == "SystemExit" else RAISED[kind]()


@step(name="f_base_exc_sync", max_retries=3)
def base_exception_sync_step(key: str) -> str:
    ran[key] += 1
    raise SystemExit("from a thread")


@workflow(name="f_base_exc_wf")
async def base_exception_step_wf(key: str, kind: str) -> str:
    return await base_exception_step(key, kind)


@workflow(name="f_base_exc_sync_wf")
async def base_exception_sync_step_wf(key: str) -> str:
    return await base_exception_sync_step(key)


@workflow(name="f_catches_base_exc_wf")
async def catches_base_exception_wf(key: str) -> dict[str, Any]:
    try:
        await base_exception_step(key, "SystemExit")
    except FatalError as exc:
        return {"type": exc.error_type, "step": exc.step_name, "message": exc.message}
    return {}


@pytest.mark.parametrize("kind", sorted(RAISED))
async def test_step_raising_base_exception_fails_the_run_not_the_worker(
        local_world: Any, kind: str) -> None:
    key = uuid.uuid4().hex
    run = await start(base_exception_step_wf, key, kind, world=local_world)
    with pytest.raises(RunFailedError) as info:
        await run.result(timeout=10)
    assert info.value.error_type == kind
    assert "step 'f_base_exc' raised" in info.value.message
    assert ran[key] == 1  # not retried
    (only,) = await run.steps()
    assert only.status == "failed" and only.error is not None and only.error.type == kind
    await assert_world_still_works(local_world)


async def test_sync_step_raising_system_exit_in_its_thread_fails_the_run(
        local_world: Any) -> None:
    key = uuid.uuid4().hex
    run = await start(base_exception_sync_step_wf, key, world=local_world)
    with pytest.raises(RunFailedError) as info:
        await run.result(timeout=10)
    assert info.value.error_type == "SystemExit" and "f_base_exc_sync" in info.value.message
    assert ran[key] == 1
    await assert_world_still_works(local_world)


async def test_step_base_exception_reaches_the_workflow_as_a_fatal_error(
        local_world: Any) -> None:
    key = uuid.uuid4().hex
    run = await start(catches_base_exception_wf, key, world=local_world)
    result = await run.result(timeout=10)
    assert result["type"] == "SystemExit" and result["step"] == "f_base_exc"
    assert "SystemExit(3)" in result["message"]
    assert ran[key] == 1


@step(name="f_cancelled_at_once", max_retries=3)
async def cancelled_at_once(key: str) -> str:
    ran[key] += 1
    raise asyncio.CancelledError  # (a step that cannot suspend: it runs without a task)


@step(name="f_cancelled_later", max_retries=3)
async def cancelled_later(key: str) -> str:
    ran[key] += 1
    await asyncio.sleep(0)
    raise asyncio.CancelledError  # (as a library's let out would be)


@workflow(name="f_cancelled_wf")
async def cancelled_step_wf(key: str, later: bool) -> str:
    return await (cancelled_later(key) if later else cancelled_at_once(key))


@pytest.mark.parametrize("later", [False, True])
async def test_a_step_raising_cancelled_error_uncancelled_fails_the_run(
        local_world: Any, later: bool) -> None:
    """A CancelledError from the step's own code, the attempt not cancelled: the run
    fails, naming the step (it used to wait forever for an outcome never posted)."""
    key = uuid.uuid4().hex
    run = await start(cancelled_step_wf, key, later, world=local_world)
    with pytest.raises(RunFailedError) as info:
        await run.result(timeout=10)
    name = "f_cancelled_later" if later else "f_cancelled_at_once"
    assert info.value.error_type == "CancelledError"
    assert f"step {name!r} raised CancelledError without being cancelled" in info.value.message
    assert ran[key] == 1  # not retried
    (only,) = await run.steps()
    assert only.status == "failed"
    await assert_world_still_works(local_world)


@workflow(name="f_wf_base_exc")
async def raising_wf(key: str, kind: str) -> str:
    await plain_step(1)
    ran[key] += 1
    raise RAISED[kind]()


@pytest.mark.parametrize("kind", sorted(RAISED))
async def test_workflow_raising_base_exception_fails_the_run_not_the_worker(
        local_world: Any, kind: str) -> None:
    key = uuid.uuid4().hex
    run = await start(raising_wf, key, kind, world=local_world)
    with pytest.raises(RunFailedError) as info:
        await run.result(timeout=10)
    assert info.value.error_type == kind
    assert "workflow 'f_wf_base_exc' raised" in info.value.message
    assert ran[key] == 1
    assert await run.status() == RunStatus.FAILED
    await assert_world_still_works(local_world)


def self_referencing_list() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


def self_referencing_dict() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["me"] = value
    return value


def too_deep() -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(100_000):  # past the recursion limit of every Python (3.13's is higher)
        value = {"a": value}
    return value


UNENCODABLE = {"self_list": self_referencing_list, "self_dict": self_referencing_dict,
               "too_deep": too_deep, "object": object}


@workflow(name="f_bad_result_wf")
async def bad_result_wf(key: str, kind: str) -> Any:
    await plain_step(1)
    ran[key] += 1
    return UNENCODABLE[kind]()


@step(name="f_bad_result_step")
async def bad_result_step(key: str, kind: str) -> Any:
    ran[key] += 1
    return UNENCODABLE[kind]()


@workflow(name="f_bad_step_result_wf")
async def bad_step_result_wf(key: str, kind: str) -> Any:
    return await bad_result_step(key, kind)


@pytest.mark.parametrize("kind", sorted(UNENCODABLE))
async def test_unencodable_workflow_result_fails_the_run_once(local_world: Any,
                                                              kind: str) -> None:
    key = uuid.uuid4().hex
    run = await start(bad_result_wf, key, kind, world=local_world)
    with pytest.raises(RunFailedError) as info:
        await run.result(timeout=10)
    assert info.value.error_type == "TypeError"
    assert "workflow 'f_bad_result_wf' result cannot be stored" in info.value.message
    assert ran[key] == 1  # failed, not replayed again and again
    await assert_world_still_works(local_world)


@pytest.mark.parametrize("kind", sorted(UNENCODABLE))
async def test_unencodable_step_result_fails_the_step_without_retry(local_world: Any,
                                                                    kind: str) -> None:
    key = uuid.uuid4().hex
    run = await start(bad_step_result_wf, key, kind, world=local_world)
    with pytest.raises(RunFailedError) as info:
        await run.result(timeout=10)
    assert info.value.error_type == "TypeError"
    assert "step 'f_bad_result_step': its result cannot be stored" in info.value.message
    assert ran[key] == 1
    await assert_world_still_works(local_world)


@pytest.mark.parametrize("kind", sorted(UNENCODABLE))
def test_encode_value_turns_every_unencodable_value_into_a_type_error(kind: str) -> None:
    with pytest.raises(TypeError, match=r"^the thing cannot be stored: "):
        encode_value(UNENCODABLE[kind](), what="the thing")


def test_encode_value_says_why_a_value_that_contains_itself_fails() -> None:
    with pytest.raises(TypeError, match="contains itself or is nested too deeply"):
        encode_value(self_referencing_list(), what="x")
