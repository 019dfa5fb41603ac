"""Versioning with `patched()` and `deprecate_patch()`, on every world.

A "deploy" is simulated by switching `CODE["version"]` while a run waits evicted (its
actor gone, so that the next delivery replays it under the new code): the workflow
below is the same registered workflow before and after, as after a real deploy.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from typing import Any

import pytest

from worldflow import (
    NonDeterminismError,
    NotInWorkflowError,
    RunStatus,
    deprecate_patch,
    patched,
    receive,
    send,
    start,
    step,
    workflow,
)

#: which code is deployed: 1 before the change, 2 with patched(), 3 with the old branch
#: gone (deprecate_patch), 4 with the patch removed altogether (too soon)
CODE = {"version": 1}
RAN: collections.Counter[str] = collections.Counter()


@pytest.fixture(autouse=True)
def _old_code() -> Any:
    CODE["version"] = 1
    RAN.clear()
    yield
    CODE["version"] = 1


def _ran(key: str) -> str:
    RAN[key] += 1
    return key.split(":", 1)[1]


@step(name="v_record")
async def record(key: str) -> str:
    return _ran(key)


@step(name="v_old_step")
async def old_step(key: str) -> str:
    return _ran(key)


@step(name="v_new_step")
async def new_step(key: str) -> str:
    return _ran(key)


@workflow(name="v_order")
async def order(tag: str) -> list[str]:
    out = [await record(f"{tag}:first")]
    await receive("go")  # the run waits here, evicted, while code is deployed
    version = CODE["version"]
    if version == 1:
        out.append(await old_step(f"{tag}:old"))
    elif version == 2:
        if patched("new-second"):
            out.append(await new_step(f"{tag}:new"))
        else:
            out.append(await old_step(f"{tag}:old"))
    elif version == 3:
        deprecate_patch("new-second")
        out.append(await new_step(f"{tag}:new"))
    else:
        out.append(await new_step(f"{tag}:new"))
    await receive("go")
    out.append(await record(f"{tag}:last"))
    return out


async def wait_evicted(world: Any, run_id: str, completed_steps: int) -> None:
    """Until the run has `completed_steps` steps completed and waits with no actor."""
    for _ in range(1500):
        events = await world.list_events(run_id)
        done = sum(e.event_type == "step_completed" for e in events)
        if done >= completed_steps and run_id not in world.engine.actors:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} did not come to wait evicted")


async def markers(world: Any, run_id: str) -> list[str]:
    return [e.event.change_id for e in await world.list_events(run_id)
            if e.event_type == "patch_marker"]


async def started(world: Any, tag: str) -> Any:
    world.engine.keep_alive = 0.0  # a run that only waits is evicted, and replayed on wake
    return await start(order, tag, world=world, run_id=f"{tag}-{uuid.uuid4().hex}")


async def test_a_run_past_the_change_keeps_the_old_branch_and_a_new_run_takes_the_new(
        world: Any) -> None:
    old = await started(world, "vo1")
    await send(old.run_id, "1", topic="go", world=world)
    await wait_evicted(world, old.run_id, 2)  # the old code ran its old step
    CODE["version"] = 2  # deploy the patched code
    new = await started(world, "vn1")
    await wait_evicted(world, new.run_id, 1)
    await send(new.run_id, "1", topic="go", world=world)
    await wait_evicted(world, new.run_id, 2)
    for run in (old, new):
        await send(run.run_id, "2", topic="go", world=world)
    assert await old.result(timeout=30) == ["first", "old", "last"]
    assert await new.result(timeout=30) == ["first", "new", "last"]
    assert (RAN["vo1:first"], RAN["vo1:old"], RAN["vo1:new"], RAN["vo1:last"]) == (1, 1, 0, 1)
    assert (RAN["vn1:first"], RAN["vn1:old"], RAN["vn1:new"], RAN["vn1:last"]) == (1, 0, 1, 1)
    assert await markers(world, old.run_id) == []
    # the new run was replayed after its marker (evicted twice): one marker all the same
    assert await markers(world, new.run_id) == ["new-second"]


async def test_a_run_that_reaches_the_change_after_the_deploy_takes_the_new_branch(
        world: Any) -> None:
    run = await started(world, "vm1")
    await wait_evicted(world, run.run_id, 1)  # started under the old code, not yet there
    CODE["version"] = 2
    await send(run.run_id, "1", topic="go", world=world)
    await wait_evicted(world, run.run_id, 2)
    await send(run.run_id, "2", topic="go", world=world)
    assert await run.result(timeout=30) == ["first", "new", "last"]
    assert (RAN["vm1:first"], RAN["vm1:old"], RAN["vm1:new"]) == (1, 0, 1)
    assert await markers(world, run.run_id) == ["new-second"]


async def test_deprecate_patch_replays_runs_that_recorded_the_marker(world: Any) -> None:
    CODE["version"] = 2
    patched_run = await started(world, "vd1")
    await send(patched_run.run_id, "1", topic="go", world=world)
    await wait_evicted(world, patched_run.run_id, 2)
    CODE["version"] = 3  # the old branch is gone
    fresh = await started(world, "vd2")
    await send(fresh.run_id, "1", topic="go", world=world)
    for run in (patched_run, fresh):
        await send(run.run_id, "2", topic="go", world=world)
    assert await patched_run.result(timeout=30) == ["first", "new", "last"]
    assert await fresh.result(timeout=30) == ["first", "new", "last"]
    assert (RAN["vd1:first"], RAN["vd1:new"], RAN["vd1:last"]) == (1, 1, 1)
    assert (RAN["vd2:first"], RAN["vd2:new"], RAN["vd2:last"]) == (1, 1, 1)
    assert await markers(world, patched_run.run_id) == ["new-second"]
    assert await markers(world, fresh.run_id) == []  # deprecate_patch records nothing


async def test_deprecate_patch_under_a_run_that_took_the_old_branch_is_nondeterminism(
        world: Any) -> None:
    old = await started(world, "vdo")
    await send(old.run_id, "1", topic="go", world=world)
    await wait_evicted(world, old.run_id, 2)
    CODE["version"] = 3  # deprecated while a run of the old branch still runs: too soon
    await send(old.run_id, "2", topic="go", world=world)
    with pytest.raises(NonDeterminismError, match=r"position 2.*v_new_step.*v_old_step"):
        await old.result(timeout=30)
    assert await old.status() == RunStatus.FAILED
    assert RAN["vdo:new"] == 0 and RAN["vdo:last"] == 0


async def test_a_marker_the_code_no_longer_asks_about_is_nondeterminism_naming_it(
        world: Any) -> None:
    CODE["version"] = 2
    run = await started(world, "vr1")
    await send(run.run_id, "1", topic="go", world=world)
    await wait_evicted(world, run.run_id, 2)
    CODE["version"] = 4  # patched("new-second") removed without deprecate_patch
    await send(run.run_id, "2", topic="go", world=world)
    with pytest.raises(NonDeterminismError, match=r"patched\('new-second'\)"):
        await run.result(timeout=30)
    assert await run.status() == RunStatus.FAILED
    assert RAN["vr1:last"] == 0


@workflow(name="v_asks_twice")
async def asks_twice() -> list[bool]:
    first = patched("twice")
    await record("v2x:one")
    return [first, patched("twice"), patched("twice")]


async def test_asking_twice_gives_the_same_answer_and_records_one_marker(world: Any) -> None:
    run = await start(asks_twice, world=world)
    assert await run.result(timeout=30) == [True, True, True]
    assert await markers(world, run.run_id) == ["twice"]


@workflow(name="v_bad_id")
async def bad_id(change_id: Any) -> str:
    try:
        patched(change_id)
    except TypeError as exc:
        return str(exc)
    return "accepted"


async def test_a_change_id_that_is_not_a_nonempty_string_is_refused(world: Any) -> None:
    for bad in ("", 42):
        run = await start(bad_id, bad, world=world)
        assert "non-empty string" in await run.result(timeout=30)
        assert await markers(world, run.run_id) == []


@step(name="v_patched_in_step")
async def patched_in_step() -> str:
    try:
        patched("in-step")
    except NotInWorkflowError as exc:
        return str(exc)
    return "allowed"


@workflow(name="v_calls_step_that_patches")
async def calls_step_that_patches() -> str:
    return await patched_in_step()


async def test_patched_outside_workflow_code_is_a_clear_error(world: Any) -> None:
    with pytest.raises(NotInWorkflowError, match="workflow code"):
        patched("outside")
    with pytest.raises(NotInWorkflowError, match="workflow code"):
        deprecate_patch("outside")
    run = await start(calls_step_that_patches, world=world)
    assert "works only in workflow code" in await run.result(timeout=30)


@workflow(name="v_branches")
async def branches(tag: str) -> list[Any]:
    async def branch(name: str) -> list[Any]:
        first = await record(f"{tag}:{name}-1")
        await asyncio.sleep(0.01)  # evicted here, replayed on wake
        took = patched(f"branch-{name}")
        second = await (new_step if took else old_step)(f"{tag}:{name}-2")
        await asyncio.sleep(0.01)
        return [first, took, second, patched(f"branch-{name}")]

    return list(await asyncio.gather(branch("a"), branch("b"), branch("c")))


async def test_patched_in_parallel_branches_replays_the_same_answers(world: Any) -> None:
    world.engine.keep_alive = 0.0  # evicted at every sleep: many replays
    run = await start(branches, "vp", world=world)
    assert await run.result(timeout=30) == [
        [f"{n}-1", True, f"{n}-2", True] for n in "abc"]
    assert sorted(await markers(world, run.run_id)) == ["branch-a", "branch-b", "branch-c"]
    assert all(RAN[f"vp:{n}-{i}"] == 1 for n in "abc" for i in (1, 2))
    from worldflow import check_replay

    await check_replay(run.run_id, world=world)


async def test_a_workflow_called_directly_takes_the_new_branch() -> None:
    assert await asks_twice() == [True, True, True]  # no run, no log: the new code
    assert RAN["v2x:one"] == 1
