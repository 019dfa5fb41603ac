"""The engine on the memory world: public API behaviour and bad input."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import msgspec
import pytest

import worldflow
from worldflow import (
    NotInWorkflowError,
    RegistrationError,
    create_hook,
    create_world,
    sleep,
    start,
    step,
    workflow,
)
from worldflow.core.durations import parse_duration


@step(name="u_square")
async def square(x: int) -> int:
    return x * x


@step(name="u_sync_step")
def sync_step(x: int) -> int:
    return x + 100


@workflow(name="u_pipeline")
async def pipeline(x: int) -> int:
    await sleep("10ms")
    return await square(x) + await sync_step(x)


async def test_step_called_outside_a_workflow_just_runs() -> None:
    assert await square(7) == 49
    assert sync_step(1) == 101


async def test_workflow_called_directly_runs_without_durability() -> None:
    assert await pipeline(3) == 9 + 103


async def test_decorators_keep_name_doc_and_signature() -> None:
    @step(name="u_documented")
    async def documented(a: int, b: str = "x") -> str:
        """Docs."""
        return b * a

    import inspect

    assert documented.__name__ == "documented" and documented.__doc__ == "Docs."
    assert list(inspect.signature(documented).parameters) == ["a", "b"]


async def test_sync_step_runs_in_a_thread_inside_a_workflow(memory_world: Any) -> None:
    run = await start(pipeline, 4, world=memory_world)
    assert await run.result(timeout=10) == 16 + 104


async def test_sleep_outside_a_workflow_is_a_clear_error() -> None:
    with pytest.raises(NotInWorkflowError, match="only inside a workflow"):
        await sleep("1s")


async def test_create_hook_outside_a_workflow_is_a_clear_error() -> None:
    with pytest.raises(NotInWorkflowError, match="only inside a workflow"):
        create_hook()


async def test_sleep_rejects_bad_durations() -> None:
    with pytest.raises(ValueError, match="sleep duration"):
        await sleep("soon")


def test_same_name_for_two_functions_is_an_error_at_import() -> None:
    @step(name="u_twice")
    async def first() -> None: ...

    with pytest.raises(RegistrationError, match="u_twice"):
        @step(name="u_twice")
        async def second() -> None: ...

    @workflow(name="u_wf_twice")
    async def wf_first() -> None: ...

    with pytest.raises(RegistrationError, match="u_wf_twice"):
        @workflow(name="u_wf_twice")
        async def wf_second() -> None: ...


def test_unknown_world_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="memory, sqlite, postgres"):
        create_world("mongo")


def test_world_is_chosen_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Any) -> None:
    monkeypatch.setenv("WORKFLOW_TARGET_WORLD", "memory")
    assert create_world().name == "memory"
    monkeypatch.setenv("WORKFLOW_TARGET_WORLD", "worldflow.worlds.memory:MemoryWorld")
    assert type(create_world()).__name__ == "MemoryWorld"
    monkeypatch.setenv("WORKFLOW_TARGET_WORLD", "no.such.module:factory")
    with pytest.raises(ValueError, match="cannot load world factory"):
        create_world()


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h", 3600), ("2d", 172800), (1.5, 1.5),
    (dt.timedelta(minutes=2), 120), ("0s", 0),
])
def test_durations_in_every_form(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5 parsecs", "-1s", -3, True, None, [1]])
def test_bad_durations_name_the_option(bad: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="timeout"):
        parse_duration(bad, what="timeout")


async def test_start_rejects_non_workflows_and_bad_run_ids(memory_world: Any) -> None:
    with pytest.raises(TypeError, match="@workflow"):
        await start(square, 1, world=memory_world)
    with pytest.raises(ValueError, match="run_id"):
        await start(pipeline, 1, world=memory_world, run_id="x'; DROP TABLE runs;--")
    page = await memory_world.list_runs()
    assert page.items == []


async def test_start_without_world_uses_the_started_world(memory_world: Any) -> None:
    run = await start(pipeline, 2, run_id="default-world-run")
    assert run.world is memory_world
    assert await run.result(timeout=10) == 4 + 102


async def test_debug_log_level_logs_every_event(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="worldflow")
    async with create_world("memory") as world:
        run = await start(pipeline, 5, world=world)
        await run.result(timeout=10)
        events = await world.list_events(run.run_id)
    logged = [r for r in caplog.records if r.name == "worldflow.events"]
    # run_created is written by start(); the actor logs every event it records
    assert len(logged) == len(events) - 1
    assert {r.event_type for r in logged} >= {"step_started", "step_completed",
                                              "run_completed", "wait_created"}
    assert all(r.run_id == run.run_id for r in logged)


class Order(msgspec.Struct):
    sku: str
    qty: int


@step(name="u_make_order")
async def make_order(sku: str) -> Order:
    return Order(sku, 2)


@step(name="u_when")
async def when() -> dt.datetime:
    return dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@workflow(name="u_typed")
async def typed_wf(sku: str) -> dict[str, Any]:
    order = await make_order(sku)
    moment = await when()
    return {"order_is_struct": isinstance(order, Order), "qty": order.qty,
            "year": moment.year}


async def test_results_are_decoded_by_return_annotation(memory_world: Any) -> None:
    run = await start(typed_wf, "abc", world=memory_world)
    assert await run.result(timeout=10) == {"order_is_struct": True, "qty": 2, "year": 2026}


@step(name="u_slow_value")
async def slow_value() -> str:
    await asyncio.sleep(0.05)
    return "slow"


@workflow(name="u_wait_for")
async def wait_for_wf() -> str:
    try:
        return await asyncio.wait_for(slow_value(), timeout=10)
    except TimeoutError:
        return "timed out"


@workflow(name="u_wait_for_short")
async def wait_for_short_wf() -> str:
    hook = create_hook()
    try:
        return str(await asyncio.wait_for(hook, timeout=0.05))
    except TimeoutError:
        return "timed out"


async def test_asyncio_wait_for_uses_durable_timers(memory_world: Any) -> None:
    run = await start(wait_for_wf, world=memory_world)
    assert await run.result(timeout=10) == "slow"
    run = await start(wait_for_short_wf, world=memory_world)
    assert await run.result(timeout=10) == "timed out"
    types = [e.event_type for e in await memory_world.list_events(run.run_id)]
    assert "wait_created" in types and "wait_completed" in types


async def test_workflow_metadata_inside_workflow_and_step(memory_world: Any) -> None:
    @step(name="u_meta_step")
    async def meta_step() -> list[str]:
        wf = worldflow.get_workflow_metadata()
        st = worldflow.get_step_metadata()
        return [wf.run_id, wf.workflow_name, st.step_name, str(st.attempt)]

    @workflow(name="u_meta_wf")
    async def meta_wf() -> list[Any]:
        wf = worldflow.get_workflow_metadata()
        return [wf.run_id, *(await meta_step())]

    run = await start(meta_wf, world=memory_world, run_id="meta-run")
    assert await run.result(timeout=10) == ["meta-run", "meta-run", "u_meta_wf",
                                            "u_meta_step", "1"]


async def test_run_ids_made_in_turn_sort_in_turn(memory_world: Any) -> None:
    """A run id start() makes is `run_` and 32 hex digits, the first 12 the world's time
    in milliseconds: ids made later sort later (rows keyed by them go to the end of
    each index), and ids made in the same millisecond still differ."""
    import re

    from worldflow.core.api import new_run_id

    ids = [(await start(pipeline, i, world=memory_world)).run_id for i in range(20)]
    assert all(re.fullmatch(r"run_[0-9a-f]{32}", run_id) for run_id in ids)
    assert len(set(ids)) == 20
    times = [run_id[4:16] for run_id in ids]
    assert times == sorted(times)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    same = {new_run_id(t0) for _ in range(1000)}
    assert len(same) == 1000 and all(run_id.startswith("run_019b76daa800") for run_id in same)
    later = new_run_id(t0 + dt.timedelta(milliseconds=1))
    assert later[4:16] == "019b76daa801" and all(later > run_id for run_id in same)
