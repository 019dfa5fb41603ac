"""Bad values are clear errors: recursive or too-deep arguments to `start()`, NaN and
Infinity anywhere a value is stored, a world factory that makes no world."""

from __future__ import annotations

import math
from typing import Any

import pytest

from worldflow import FatalError, StepFailedError, create_world, start, step, workflow


@workflow(name="hv_takes_anything")
async def takes_anything(value: Any) -> str:
    return "ran"


@step(name="hv_nan_annotated")
async def nan_annotated(kind: str) -> float:
    return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[kind]


@step(name="hv_nan_plain")
async def nan_plain(kind: str):  # type: ignore[no-untyped-def]
    return {"value": [1.0, {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[kind]]}


@workflow(name="hv_nan_wf")
async def nan_wf(annotated: bool, kind: str) -> dict[str, Any]:
    try:
        value = await (nan_annotated(kind) if annotated else nan_plain(kind))
    except StepFailedError as exc:
        return {"error": exc.error_type, "fatal": isinstance(exc, FatalError),
                "message": exc.message}
    return {"value": value}


@workflow(name="hv_nan_result_wf")
async def nan_result_wf() -> float:
    return math.nan


def _recursive() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


def _deep() -> list[Any]:
    value: list[Any] = []
    inner = value
    for _ in range(100_000):
        inner.append([])
        inner = inner[0]
    return value


@pytest.mark.parametrize("make", [_recursive, _deep], ids=["recursive", "too-deep"])
async def test_recursive_or_too_deep_argument_is_a_type_error_naming_the_workflow(
        world: Any, make: Any) -> None:
    with pytest.raises(TypeError, match=r"hv_takes_anything.*nested too deeply"):
        await start(takes_anything, make(), world=world)
    page = await world.list_runs(workflow_name="hv_takes_anything")
    assert page.items == []  # nothing was started


@pytest.mark.parametrize("value", [math.nan, math.inf, {"a": [-math.inf]}])
async def test_nan_or_infinity_argument_is_refused_at_start(world: Any, value: Any) -> None:
    with pytest.raises(TypeError, match=r"hv_takes_anything.*NaN or Infinity"):
        await start(takes_anything, value, world=world)


@pytest.mark.parametrize("kind", ["nan", "inf", "-inf"])
async def test_step_returning_nan_fails_the_same_with_or_without_annotation(
        world: Any, kind: str) -> None:
    outcomes = []
    for annotated in (True, False):
        run = await start(nan_wf, annotated, kind, world=world)
        outcomes.append(await run.result(timeout=30))
    for outcome in outcomes:
        assert outcome["error"] == "TypeError" and outcome["fatal"] is True
        assert "NaN or Infinity" in outcome["message"]


async def test_workflow_returning_nan_fails_the_run(world: Any) -> None:
    run = await start(nan_result_wf, world=world)
    with pytest.raises(Exception, match="NaN or Infinity"):
        await run.result(timeout=30)
    assert (await run.status()) == "failed"


def test_world_factory_returning_no_world_names_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKFLOW_TARGET_WORLD", "os:getcwd")
    with pytest.raises(ValueError) as info:
        create_world()
    message = str(info.value)
    assert message.startswith("WORKFLOW_TARGET_WORLD=os:getcwd: ")
    assert "returned a str, not a world" in message and "\n" not in message
    with pytest.raises(ValueError, match=r"^create_world\('os:sep'\): os:sep is a str"):
        create_world("os:sep")
    with pytest.raises(ValueError, match="cannot load world factory"):
        create_world("no_such_module_x:make")
    assert create_world("worldflow.worlds.memory:MemoryWorld").name == "memory"
