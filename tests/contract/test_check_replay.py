"""The deploy check `check_replay`, on every world: it replays a run's log against the
code registered now, runs no step body, writes nothing, and raises
`NonDeterminismError` where the code and the log disagree."""

from __future__ import annotations

import asyncio
import collections
import uuid
from typing import Any

import pytest

from worldflow import (
    NonDeterminismError,
    RegistrationError,
    RunNotFoundError,
    check_replay,
    deprecate_patch,
    patched,
    receive,
    send,
    sleep,
    start,
    step,
    workflow,
)
from worldflow.core import registry
from worldflow.core.check import check_runs

#: 1: the code the runs ran; 2: a step inserted before the wait (incompatible);
#: 3: the second step behind patched(); 4: deprecate_patch; 5: the patch removed;
#: 6: a step appended at the end
CODE = {"version": 1}
RAN: collections.Counter[str] = collections.Counter()


@pytest.fixture(autouse=True)
def _deployed_code() -> Any:
    CODE["version"] = 1
    yield
    CODE["version"] = 1


@step(name="k_fetch")
async def fetch(n: int) -> int:
    RAN["fetch"] += 1
    return n + 1


@step(name="k_charge")
async def charge(n: int) -> int:
    RAN["charge"] += 1
    return n * 10


@step(name="k_audit")
async def audit(n: int) -> int:
    RAN["audit"] += 1
    return n


@workflow(name="k_order")
async def order(n: int, wait: bool) -> int:
    version = CODE["version"]
    if version == 2:
        await audit(n)  # inserted before the steps that running runs recorded
    got = await fetch(n)
    if version == 3 and not patched("charge-twice"):
        got = await charge(got)
    elif version == 3:
        got = await charge(await charge(got))
    elif version == 4:
        deprecate_patch("charge-twice")
        got = await charge(await charge(got))
    elif version == 5:
        got = await charge(await charge(got))
    else:
        got = await charge(got)
    await sleep("10ms")
    if wait:
        got += await receive("go")
    if version == 6:
        await audit(got)  # appended at the end
    return got


async def snapshot(world: Any, run_id: str) -> tuple[Any, ...]:
    """Everything a check could change about a run."""
    streams = await world.list_streams(run_id)
    return (await world.get_run(run_id), await world.list_events(run_id),
            await world.list_steps(run_id), await world.list_hooks(run_id), streams,
            [await world.read_stream(run_id, name) for name, _, _ in streams],
            await world.read_inbox(run_id))


async def waiting_run(world: Any) -> Any:
    """A run past its steps, waiting evicted for a message."""
    world.engine.keep_alive = 0.0
    run = await start(order, 1, True, world=world, run_id=f"k-{uuid.uuid4().hex}")
    for _ in range(1500):
        events = await world.list_events(run.run_id)
        if (any(e.event_type == "wait_completed" for e in events)
                and run.run_id not in world.engine.actors):
            return run
        await asyncio.sleep(0.02)
    raise AssertionError("the run did not come to wait for its message")


async def test_a_completed_run_replays_to_its_end_running_and_writing_nothing(
        world: Any) -> None:
    run = await start(order, 1, False, world=world)
    assert await run.result(timeout=30) == 20
    before, ran = await snapshot(world, run.run_id), RAN.copy()
    assert await check_replay(run.run_id, world=world) is None
    assert await snapshot(world, run.run_id) == before
    assert RAN == ran  # no step body ran


async def test_a_running_run_replays_through_its_last_event_writing_nothing(
        world: Any) -> None:
    run = await waiting_run(world)
    before, ran = await snapshot(world, run.run_id), RAN.copy()
    await check_replay(run.run_id, world=world)
    assert await snapshot(world, run.run_id) == before
    assert RAN == ran
    await send(run.run_id, 5, topic="go", world=world)  # and the run still goes on
    assert await run.result(timeout=30) == 25


async def test_an_incompatible_change_is_nondeterminism_naming_where_and_what(
        world: Any) -> None:
    run = await waiting_run(world)
    before, ran = await snapshot(world, run.run_id), RAN.copy()
    CODE["version"] = 2
    with pytest.raises(NonDeterminismError, match=r"position 1.*k_audit.*k_fetch") as info:
        await check_replay(run.run_id, world=world)
    error = info.value
    assert (error.workflow, error.run_id, error.position) == ("k_order", run.run_id, "1")
    assert (error.expected, error.found) == ("step 'k_fetch'", "step 'k_audit'")
    assert await snapshot(world, run.run_id) == before
    assert RAN == ran
    assert await run.status() == "running"  # the check failed; the run did not


async def test_a_completed_run_whose_code_now_makes_another_call_fails_the_check(
        world: Any) -> None:
    run = await start(order, 1, False, world=world)
    assert await run.result(timeout=30) == 20
    CODE["version"] = 6  # a step after the last recorded call: the log ended before it
    with pytest.raises(NonDeterminismError, match=r"run_completed.*k_audit") as info:
        await check_replay(run.run_id, world=world)
    assert info.value.found == "step 'k_audit' at position 4"
    assert RAN["audit"] == 0


async def test_patched_code_passes_for_old_runs_and_removing_the_patch_fails(
        world: Any) -> None:
    old = await waiting_run(world)  # recorded one charge, before the patch existed
    CODE["version"] = 3
    await check_replay(old.run_id, world=world)  # patched() is False for it
    CODE["version"] = 4
    with pytest.raises(NonDeterminismError, match=r"position 3.*k_charge"):
        await check_replay(old.run_id, world=world)  # too soon: the old branch is gone
    CODE["version"] = 3
    new = await waiting_run(world)  # recorded the marker and two charges
    assert [e.event.change_id for e in await world.list_events(new.run_id)
            if e.event_type == "patch_marker"] == ["charge-twice"]
    await check_replay(new.run_id, world=world)
    CODE["version"] = 4
    await check_replay(new.run_id, world=world)  # deprecate_patch tolerates the marker
    CODE["version"] = 5
    with pytest.raises(NonDeterminismError, match=r"patched\('charge-twice'\)") as info:
        await check_replay(new.run_id, world=world)
    assert info.value.expected == "patched('charge-twice')"


async def test_check_runs_reports_each_run(world: Any) -> None:
    runs = [await waiting_run(world) for _ in range(3)]
    records = [await world.get_run(run.run_id) for run in runs]
    assert [r.error for r in await check_runs(world, records)] == [None] * 3
    CODE["version"] = 2
    results = await check_runs(world, records)
    assert [r.run_id for r in results] == [run.run_id for run in runs]
    assert all(isinstance(r.error, NonDeterminismError) for r in results)


async def test_an_unknown_run_id_is_a_clear_error(world: Any) -> None:
    with pytest.raises(RunNotFoundError, match="no-such-run"):
        await check_replay("no-such-run", world=world)
    with pytest.raises(TypeError, match="non-empty string"):
        await check_replay("", world=world)


@workflow(name="k_unregistered")
async def unregistered() -> int:
    return 1


async def test_a_run_of_an_unregistered_workflow_is_a_registration_error(
        world: Any) -> None:
    run = await start(unregistered, world=world)
    assert await run.result(timeout=30) == 1
    defn = registry._workflows.pop("k_unregistered")
    try:
        with pytest.raises(RegistrationError, match=r"k_unregistered.*not registered"):
            await check_replay(run.run_id, world=world)
    finally:
        registry._workflows["k_unregistered"] = defn


# -- every kind of recorded call replays: no false alarms ---------------------------------
@workflow(name="k_child")
async def child_flow(n: int) -> int:
    return await fetch(n)


@workflow(name="k_everything")
async def everything(n: int) -> dict[str, Any]:
    from worldflow import create_hook, gather, set_event

    a, b = await gather(fetch(n), charge(n))
    set_event("progress", "half")
    await asyncio.wait_for(asyncio.sleep(0.01), timeout=60)  # a sleep and a timeout timer
    hook = create_hook()
    set_event("hook", hook.token)
    payload = await hook
    late = await receive("none", timeout="10ms")  # times out
    message = await receive("go")
    kid = await child_flow(n)
    if patched("extra"):
        kid += 1
    return {"a": a, "b": b, "payload": payload, "late": late, "message": message,
            "kid": kid}


@workflow(name="k_continues")
async def continues(n: int) -> int:
    from worldflow import continue_as_new

    got = await fetch(n)
    if n < 2:
        continue_as_new(n + 1)
    return got


@workflow(name="k_cancelled")
async def cancelled_flow() -> None:
    try:
        await receive("never")
    finally:
        await audit(0)  # compensation after the cancel


async def test_runs_using_every_kind_of_call_replay_while_waiting_and_after_the_end(
        world: Any) -> None:
    from worldflow import get_event, resume_hook

    world.engine.keep_alive = 0.0
    run = await start(everything, 3, world=world)
    token = await get_event(run.run_id, "hook", timeout=30)
    for _ in range(1500):  # until it waits, evicted
        if run.run_id not in world.engine.actors:
            break
        await asyncio.sleep(0.02)
    before, ran = await snapshot(world, run.run_id), RAN.copy()
    await check_replay(run.run_id, world=world)  # waiting on the hook
    assert await snapshot(world, run.run_id) == before and RAN == ran
    await resume_hook(token, {"ok": True}, world=world)
    for _ in range(1500):  # until it waits for the message
        waits = [e for e in await world.list_events(run.run_id)
                 if e.event_type == "wait_completed"]
        if len(waits) >= 2 and run.run_id not in world.engine.actors:
            break
        await asyncio.sleep(0.02)
    await check_replay(run.run_id, world=world)
    await send(run.run_id, "hi", topic="go", world=world)
    assert await run.result(timeout=30) == {"a": 4, "b": 30, "payload": {"ok": True},
                                            "late": None, "message": "hi", "kid": 5}
    await check_replay(run.run_id, world=world)
    kid = next(e.event.child_run_id for e in await world.list_events(run.run_id)
               if e.event_type == "child_started")
    await check_replay(kid, world=world)  # the child too

    chain = await start(continues, 0, world=world)
    assert await chain.result(timeout=30) == 3
    await check_replay(chain.run_id, world=world)  # ended `continued`

    doomed = await start(cancelled_flow, world=world)
    for _ in range(1500):
        if doomed.run_id not in world.engine.actors and len(
                await world.list_events(doomed.run_id)) >= 2:
            break
        await asyncio.sleep(0.02)
    await doomed.cancel()
    for _ in range(1500):
        if (await doomed.status()) == "cancelled":
            break
        await asyncio.sleep(0.02)
    assert await doomed.status() == "cancelled"
    await check_replay(doomed.run_id, world=world)


async def test_without_a_world_it_opens_the_environments_world_only_to_read(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from worldflow import create_world
    from worldflow.core import runtime

    path = str(tmp_path / "env.db")
    async with create_world("sqlite", path=path) as world:
        run = await start(order, 1, False, world=world)
        assert await run.result(timeout=30) == 20
        before = await snapshot(world, run.run_id)
    opened: list[Any] = []

    def factory() -> Any:
        opened.append(create_world("sqlite", path=path))
        return opened[-1]

    monkeypatch.setattr(runtime, "_factory", factory)
    await check_replay(run.run_id)
    CODE["version"] = 2
    with pytest.raises(NonDeterminismError):
        await check_replay(run.run_id)
    assert len(opened) == 2
    assert all(runtime.engine_for(w) is None for w in opened)  # no engine: nothing ran
    assert runtime.default_world() is None
    async with create_world("sqlite", path=path) as world:
        assert await snapshot(world, run.run_id) == before


async def test_checking_many_finished_runs_on_sqlite_is_quick(tmp_path: Any) -> None:
    """The benchmark (benchmarks/check_replay.py) measures over 4,000 runs/s; this asks
    for far less, so that a loaded machine passes, but catches a check gone slow (a
    write, a sleep, a quadratic replay)."""
    import time

    from worldflow import create_world

    path = str(tmp_path / "many.db")
    async with create_world("sqlite", path=path) as world:
        runs = [await start(order, i, False, world=world) for i in range(300)]
        for run in runs:
            await run.result(timeout=60)
    reader = create_world("sqlite", path=path)
    await reader.open()
    try:
        records = [await reader.get_run(run.run_id) for run in runs]
        ran = RAN.copy()
        began = time.perf_counter()
        results = await check_runs(reader, records)
        seconds = time.perf_counter() - began
    finally:
        await reader.close()
    assert [r.error for r in results] == [None] * 300
    assert RAN == ran
    assert 300 / seconds > 300, f"{300 / seconds:.0f} runs/s"
