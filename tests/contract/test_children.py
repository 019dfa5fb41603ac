"""Child workflows: durable runs started by a workflow, on every world."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from worldflow import (
    FatalError,
    RunCancelledError,
    gather,
    get_workflow_metadata,
    receive,
    start,
    step,
    workflow,
)
from worldflow.core import registry

CALLS: collections.Counter[str] = collections.Counter()


@step(name="c_count")
async def count(key: str) -> str:
    CALLS[key] += 1
    return key


@step(name="c_explode", max_retries=0)
async def explode(why: str) -> None:
    raise FatalError(why)


@workflow(name="c_child")
async def child(x: int) -> dict[str, Any]:
    meta = get_workflow_metadata()
    await count(f"child:{meta.run_id}")
    await asyncio.sleep(0.2)  # the parent is evicted meanwhile (keep_alive 0)
    return {"double": x * 2, "parent": meta.parent_run_id, "me": meta.run_id}


@workflow(name="c_parent")
async def parent(x: int) -> dict[str, Any]:
    await count("parent-before")
    result = await child(x)
    await count("parent-after")
    return result


@workflow(name="c_failing_child")
async def failing_child(why: str) -> None:
    await explode(why)


@workflow(name="c_catches")
async def catches(why: str) -> str:
    try:
        await failing_child(why)
    except FatalError as exc:
        return f"caught {type(exc).__name__}: {exc}"
    return "not raised"


@workflow(name="c_starter")
async def starter(named: str) -> list[Any]:
    first = await start(child, 1)
    second = await start(child, 2, run_id=named)
    return [first.run_id, second.run_id, (await second.result())["double"],
            (await first.result())["double"]]


@workflow(name="c_waits_forever")
async def waits_forever() -> Any:
    return await receive()


@workflow(name="c_parent_of_waiter")
async def parent_of_waiter() -> Any:
    return await waits_forever()


@workflow(name="c_fan_out")
async def fan_out(n: int) -> list[int]:
    results = await gather(*(child(i) for i in range(n)), limit=10)
    return [r["double"] for r in results]


@workflow(name="c_gone")
async def gone() -> int:
    return 1


@workflow(name="c_calls_gone")
async def calls_gone() -> str:
    try:
        await gone()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "started"


async def children_of(world: Any, parent_id: str) -> list[Any]:
    page = await world.list_runs(limit=500)
    return [r for r in page.items if r.parent_run_id == parent_id]


async def test_awaiting_a_workflow_runs_it_as_a_durable_child(world: Any) -> None:
    CALLS.clear()
    world.engine.keep_alive = 0.0  # the parent is evicted while it waits, then replayed
    run = await start(parent, 21, world=world)
    result = await run.result(timeout=30)
    child_id = f"{run.run_id}:2"
    assert result == {"double": 42, "parent": run.run_id, "me": child_id}
    assert CALLS["parent-before"] == 1 and CALLS["parent-after"] == 1
    assert CALLS[f"child:{child_id}"] == 1
    kids = await children_of(world, run.run_id)
    assert [(k.run_id, k.status, k.workflow_name) for k in kids] == [
        (child_id, "completed", "c_child")]
    assert (await world.get_run(run.run_id)).parent_run_id is None
    kinds = [e.event_type for e in await world.list_events(run.run_id)]
    assert kinds.count("child_started") == 1 and kinds.count("child_ended") == 1


async def test_a_childs_error_is_raised_in_the_parent(world: Any) -> None:
    run = await start(catches, "no seats", world=world)
    # as run.result() raises it: the step's FatalError, as a FatalStepError
    assert await run.result(timeout=30) == "caught FatalStepError: no seats"
    kids = await children_of(world, run.run_id)
    assert [k.status for k in kids] == ["failed"]


async def test_start_inside_a_workflow_returns_a_handle_to_await(world: Any) -> None:
    CALLS.clear()
    world.engine.keep_alive = 0.0
    run = await start(starter, "named-child-" + world.name, world=world)
    first_id = f"{run.run_id}:1"
    assert await run.result(timeout=30) == [first_id, "named-child-" + world.name, 4, 2]
    kids = await children_of(world, run.run_id)
    assert sorted(k.run_id for k in kids) == sorted([first_id, "named-child-" + world.name])
    assert CALLS[f"child:{first_id}"] == 1


async def test_cancelling_a_parent_cancels_its_unfinished_child(world: Any) -> None:
    run = await start(parent_of_waiter, world=world)
    child_id = f"{run.run_id}:1"
    for _ in range(1000):
        if await world.get_run(child_id) is not None:
            break
        await asyncio.sleep(0.01)
    await run.cancel()
    with pytest.raises(RunCancelledError):
        await run.result(timeout=30)
    ended = await world.wait_run_finished(child_id, timeout=30)
    assert ended.status == "cancelled"


async def test_fan_out_of_100_children_under_a_limit_replays_identically(
        world: Any) -> None:
    CALLS.clear()
    world.engine.keep_alive = 0.0  # the parent is evicted and replayed many times
    run = await start(fan_out, 100, world=world)
    assert await run.result(timeout=120) == [i * 2 for i in range(100)]
    kids = await children_of(world, run.run_id)
    assert len(kids) == 100 and {k.status for k in kids} == {"completed"}
    assert all(CALLS[f"child:{k.run_id}"] == 1 for k in kids)
    events = await world.list_events(run.run_id)
    started = [e.event.child_run_id for e in events if e.event_type == "child_started"]
    assert started == [f"{run.run_id}:{n}" for n in range(1, 101)]  # in call order, once
    assert sum(e.event_type == "child_ended" for e in events) == 100


async def test_a_child_of_an_unregistered_workflow_is_an_error_at_the_call(
        world: Any) -> None:
    defn = registry._workflows.pop("c_gone")
    try:
        run = await start(calls_gone, world=world)
        message = await run.result(timeout=30)
    finally:
        registry._workflows["c_gone"] = defn
    assert message.startswith("RegistrationError: ")
    assert "'c_gone'" in message and "not registered" in message
    assert await children_of(world, run.run_id) == []


@pytest.mark.parametrize("keep_alive", [0.0, 60.0], ids=["evicted", "live"])
async def test_a_parent_finds_its_childs_end_when_the_notice_is_lost(
        world: Any, monkeypatch: pytest.MonkeyPatch, keep_alive: float) -> None:
    import datetime as dt

    from worldflow.core import actor

    async def lost(parent_run_id: str, child_run_id: str) -> None:
        """The child's process stopped between its last event and telling the parent."""

    monkeypatch.setattr(world, "child_ended", lost)
    monkeypatch.setattr(actor, "CHILD_RECHECK", dt.timedelta(seconds=0.3))
    world.engine.keep_alive = keep_alive
    run = await start(parent, 5, world=world)
    result = await run.result(timeout=30)
    assert result["double"] == 10
    kinds = [e.event_type for e in await world.list_events(run.run_id)]
    assert kinds.count("child_ended") == 1
