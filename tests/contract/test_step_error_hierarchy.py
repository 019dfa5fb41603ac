"""`except StepFailedError` catches every failure of a step call, fatal or not;
`except FatalError` still catches a step's FatalError."""

from __future__ import annotations

from typing import Any

import pytest

from worldflow import (
    FatalError,
    FatalStepError,
    StepFailedError,
    start,
    step,
    workflow,
)


@step(name="seh_fatal")
async def fatal_step(reason: str) -> str:
    raise FatalError(reason)


@step(name="seh_flaky", max_retries=1, backoff="1ms")
async def always_fails() -> str:
    raise KeyError("gone")


@step(name="seh_unstorable")
async def unstorable() -> Any:
    return object()


@workflow(name="seh_catch_step_failed")
async def catch_step_failed(which: str) -> dict[str, Any]:
    call = {"fatal": lambda: fatal_step("no"), "exhausted": always_fails,
            "unstorable": unstorable}[which]
    try:
        await call()
    except StepFailedError as exc:
        return {"step": exc.step_name, "type": exc.error_type, "message": exc.message,
                "fatal": isinstance(exc, FatalError), "attempts": exc.attempts}
    return {}


@workflow(name="seh_catch_fatal")
async def catch_fatal() -> str:
    try:
        await fatal_step("still caught")
    except FatalError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "not raised"


@workflow(name="seh_uncaught")
async def uncaught() -> str:
    return await fatal_step("uncaught")


async def test_except_step_failed_error_catches_a_steps_fatal_error(world: Any) -> None:
    run = await start(catch_step_failed, "fatal", world=world)
    assert await run.result(timeout=30) == {"step": "seh_fatal", "type": "FatalError",
                                            "message": "no", "fatal": True, "attempts": 1}


async def test_except_step_failed_error_catches_exhausted_and_unstorable(world: Any) -> None:
    exhausted = await (await start(catch_step_failed, "exhausted", world=world)
                       ).result(timeout=30)
    assert (exhausted["step"], exhausted["type"], exhausted["fatal"],
            exhausted["attempts"]) == ("seh_flaky", "KeyError", False, 2)
    bad = await (await start(catch_step_failed, "unstorable", world=world)).result(timeout=30)
    assert (bad["step"], bad["type"], bad["fatal"]) == ("seh_unstorable", "TypeError", True)


async def test_except_fatal_error_still_catches_a_steps_fatal_error(world: Any) -> None:
    run = await start(catch_fatal, world=world)
    assert await run.result(timeout=30) == "FatalStepError: still caught"


async def test_run_failed_by_a_fatal_step_raises_both_from_result(world: Any) -> None:
    run = await start(uncaught, world=world)
    with pytest.raises(StepFailedError) as info:
        await run.result(timeout=30)
    assert isinstance(info.value, FatalError) and isinstance(info.value, FatalStepError)
    assert (info.value.step_name, info.value.message) == ("seh_fatal", "uncaught")


def test_hierarchy() -> None:
    assert issubclass(FatalStepError, StepFailedError) and issubclass(FatalStepError,
                                                                       FatalError)
    assert not issubclass(FatalError, StepFailedError)  # raising FatalError in a step
    assert str(FatalStepError("s", "FatalError", "msg")) == "msg"
