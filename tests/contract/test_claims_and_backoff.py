"""Queue rules of the World protocol, on every world: claims by workflow name, releases
with backoff, hook metadata, and seq fencing of appends."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pytest
from msgspec import Raw

from tests.conftest import WORLD_NAMES, make_world
from tests.contract.test_world_protocol import FakeClock, Log, create, uid
from worldflow.core.events import EventRecord, HookCreated, RunStarted, StepStarted
from worldflow.errors import LeaseLostError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture(params=WORLD_NAMES)
async def clocked(request: pytest.FixtureRequest,
                  tmp_path: Path) -> AsyncIterator[tuple[Any, FakeClock]]:
    """An opened world (no engine) whose clock the test moves."""
    clock = FakeClock()
    world = make_world(request.param, tmp_path, request, clock=clock)
    await world.open()
    try:
        yield world, clock
    finally:
        await world.close()


# -- claims by workflow name ------------------------------------------------------------
async def test_claim_with_workflows_takes_only_runs_of_those_workflows(
        clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    mine, theirs = uid("wf"), uid("wf")
    other_run = await create(world, theirs)
    clock.advance(1)
    my_runs = []
    for _ in range(3):
        my_runs.append(await create(world, mine))
        clock.advance(1)
    assert await world.claim_runs("a", 10, 30.0, workflows=set()) == []
    assert await world.claim_runs("a", 2, 30.0, workflows={mine, uid("wf")}) == my_runs[:2]
    assert await world.claim_runs("a", 10, 30.0, workflows=[mine]) == my_runs[2:]
    assert await world.claim_runs("b", 10, 30.0, workflows={mine}) == []
    assert await world.claim_runs("b", 10, 30.0) == [other_run]  # None: any workflow


async def test_expired_leases_are_claimed_only_by_workers_with_the_workflow(
        clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    wf = uid("wf")
    run_id = await create(world, wf)
    assert await world.claim_runs("a", 10, 10.0) == [run_id]
    clock.advance(10)
    assert await world.claim_runs("b", 10, 10.0, workflows={uid("wf")}) == []
    assert await world.claim_runs("b", 10, 10.0, workflows={wf}) == [run_id]


async def test_a_run_with_a_pending_cancel_is_claimable_by_any_worker(
        clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    wf, elsewhere = uid("wf"), uid("wf")
    run_id = await create(world, wf)
    assert await world.next_wake_at(workflows={elsewhere}) is None
    assert await world.request_cancel(run_id) is True
    assert await world.next_wake_at(workflows={elsewhere}) == clock.now
    assert await world.claim_runs("b", 10, 30.0, workflows={elsewhere}) == [run_id]


async def test_a_worker_that_backed_off_from_a_cancel_does_not_take_it_again(
        clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    wf, elsewhere = uid("wf"), uid("wf")
    run_id = await create(world, wf)
    await world.request_cancel(run_id)
    assert await world.claim_runs("lacking", 10, 30.0, workflows={elsewhere}) == [run_id]
    await world.release_run(run_id, "lacking", clock.now + dt.timedelta(hours=1),
                            backoff=True)
    assert await world.claim_runs("lacking", 10, 30.0, workflows={elsewhere}) == []
    assert await world.next_wake_at(workflows={elsewhere}) is None
    assert await world.claim_runs("able", 10, 30.0, workflows={wf}) == [run_id]


async def test_a_taken_cancel_no_longer_makes_the_run_claimable_by_anyone(
        clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    wf = uid("wf")
    run_id = await create(world, wf)
    await world.request_cancel(run_id)
    assert await world.claim_runs("a", 10, 30.0, workflows={wf}) == [run_id]
    inbox = await world.read_inbox(run_id)
    # the workflow swallowed the cancel and goes on
    await Log(world, run_id).append(RunStarted(), inbox_ids=[m.id for m in inbox])
    await world.release_run(run_id, "a", clock.now)
    assert await world.claim_runs("b", 10, 30.0, workflows={uid("wf")}) == []
    assert await world.claim_runs("b", 10, 30.0, workflows={wf}) == [run_id]


async def test_next_wake_at_with_workflows_ignores_other_workflows_jobs(
        clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    soon, later = uid("wf"), uid("wf")
    soon_run, later_run = await create(world, soon), await create(world, later)
    await world.claim_runs("a", 10, 30.0)
    await world.release_run(soon_run, "a", clock.now + dt.timedelta(seconds=5))
    await world.release_run(later_run, "a", clock.now + dt.timedelta(seconds=50))
    assert await world.next_wake_at() == clock.now + dt.timedelta(seconds=5)
    assert await world.next_wake_at(workflows={later}) == clock.now + dt.timedelta(seconds=50)
    assert await world.next_wake_at(workflows={uid("wf")}) is None


# -- release with backoff -------------------------------------------------------------------
async def _held_run_with_hook(world: Any) -> tuple[str, str]:
    run_id, token = await create(world), uid("tok")
    assert await world.claim_runs("a", 10, 30.0) == [run_id]
    await Log(world, run_id).append(RunStarted(), HookCreated("h1", token))
    return run_id, token


async def test_release_with_backoff_waits_for_wake_at_despite_hook_payloads(
        clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    run_id, token = await _held_run_with_hook(world)
    await world.resume_hook(token, Raw(b'"early"'))  # waiting in the inbox already
    wake_at = clock.now + dt.timedelta(seconds=30)
    await world.release_run(run_id, "a", wake_at, backoff=True)
    assert await world.claim_runs("b", 10, 30.0) == []
    await world.resume_hook(token, Raw(b'"during"'))  # arriving during the backoff
    assert await world.claim_runs("b", 10, 30.0) == []
    assert await world.next_wake_at() == wake_at
    clock.advance(30)
    assert await world.claim_runs("b", 10, 30.0) == [run_id]
    assert [m.payload for m in await world.read_inbox(run_id)] == [Raw(b'"early"'),
                                                                  Raw(b'"during"')]


async def test_a_cancel_ends_a_backoff_at_once(clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    run_id, _ = await _held_run_with_hook(world)
    await world.release_run(run_id, "a", clock.now + dt.timedelta(hours=1), backoff=True)
    assert await world.claim_runs("b", 10, 30.0) == []
    assert await world.request_cancel(run_id) is True
    assert await world.claim_runs("b", 10, 30.0) == [run_id]


async def test_release_with_backoff_and_a_pending_cancel_is_available_at_once(
        clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    run_id, _ = await _held_run_with_hook(world)
    await world.request_cancel(run_id)  # arrives while "a" holds the run
    await world.release_run(run_id, "a", clock.now + dt.timedelta(hours=1), backoff=True)
    assert await world.claim_runs("b", 10, 30.0) == [run_id]


async def test_backoff_ends_with_the_next_claim(clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    run_id, token = await _held_run_with_hook(world)
    await world.release_run(run_id, "a", clock.now + dt.timedelta(seconds=1), backoff=True)
    clock.advance(1)
    assert await world.claim_runs("b", 10, 30.0) == [run_id]
    await world.release_run(run_id, "b", None)  # an ordinary eviction: waits for input
    await world.resume_hook(token, Raw(b"1"))
    assert await world.claim_runs("c", 10, 30.0) == [run_id]


# -- hooks' metadata ----------------------------------------------------------------------
@pytest.fixture(params=WORLD_NAMES)
async def isolated(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """An opened world in a database of its own (Postgres: a fresh database), for events
    other tests must not meet: a hook_created with metadata cannot be decoded yet."""
    if request.param != "postgres":
        world = make_world(request.param, tmp_path, request)
        await world.open()
        try:
            yield world
        finally:
            await world.close()
        return
    from tests.postgres.test_processes import drop_db, fresh_db
    from worldflow.worlds import create_world

    url = await fresh_db(request.getfixturevalue("postgres_url"))
    world = create_world("postgres", connection_string=url)
    await world.open()
    try:
        yield world
    finally:
        await world.close()
        await drop_db(url)


async def test_hook_metadata_is_stored_and_returned(isolated: Any) -> None:
    world = isolated
    run_id = await create(world)
    with_meta, without = uid("tok"), uid("tok")
    metadata = Raw(b'{"respond":{"status":202,"body":"ok"}}')
    await Log(world, run_id).append(RunStarted(), HookCreated("h1", with_meta, metadata),
                                    HookCreated("h2", without))
    hook = await world.get_hook(with_meta)
    assert hook is not None and hook.metadata == metadata
    plain = await world.get_hook(without)
    assert plain is not None and plain.metadata is None
    listed = {h.token: h.metadata for h in await world.list_hooks(run_id)}
    assert listed == {with_meta: metadata, without: None}


async def test_hook_created_with_metadata_comes_back_from_the_log(isolated: Any) -> None:
    world = isolated
    run_id = await create(world)
    written = await Log(world, run_id).append(
        RunStarted(), HookCreated("h1", uid("tok"), Raw(b'{"status":202}')))
    assert (await world.list_events(run_id))[1:] == written


# -- seq fencing ---------------------------------------------------------------------------
async def test_an_append_that_skips_a_seq_is_refused_whole(
        clocked: tuple[Any, FakeClock]) -> None:
    world, _ = clocked
    run_id = await create(world)
    await Log(world, run_id).append(RunStarted())
    gap = [EventRecord(run_id, 3, StepStarted("c1", "s", 1), world.now())]
    with pytest.raises(LeaseLostError):
        await world.append_events(run_id, gap)
    assert [e.seq for e in await world.list_events(run_id)] == [0, 1]
