"""The `World` protocol's guarantees, checked on every world (memory, sqlite, postgres).

These talk to the storage directly (no engine): each test names the guarantee it holds
a world to. Worlds may share one database across tests (postgres), so every test uses
its own workflow name, run ids and hook tokens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from msgspec import Raw

from tests.conftest import WORLD_NAMES, make_world
from worldflow.core.events import (
    ErrorInfo,
    EventRecord,
    HookCreated,
    HookDisposed,
    HookReceived,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
)
from worldflow.core.records import NewRun, RunStatus, StepStatus
from worldflow.errors import (
    HookConflictError,
    HookNotFoundError,
    LeaseLostError,
    RunNotFoundError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from worldflow.core.events import Event


class FakeClock:
    """A clock that moves only when told to, so lease and wake-up times are exact."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=123456)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


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


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_run(world: Any, workflow_name: str, run_id: str | None = None, *,
            created_at: dt.datetime | None = None, dedup_key: str | None = None) -> NewRun:
    return NewRun(run_id or uid("run"), workflow_name, Raw(b'{"n":1}'),
                  created_at or world.now(), dedup_key=dedup_key)


async def create(world: Any, workflow_name: str | None = None, **options: Any) -> str:
    run, created = await world.create_run(new_run(world, workflow_name or uid("wf"), **options),
                                          lease_owner=None, lease_seconds=30.0)
    assert created
    return str(run.run_id)


class Log:
    """Builds a run's next events with the right seq numbers."""

    def __init__(self, world: Any, run_id: str, seq: int = 1) -> None:
        self.world, self.run_id, self.seq = world, run_id, seq

    def next(self, *events: Event) -> list[EventRecord]:
        records = [EventRecord(self.run_id, self.seq + i, e, self.world.now())
                   for i, e in enumerate(events)]
        self.seq += len(events)
        return records

    async def append(self, *events: Event, **options: Any) -> list[EventRecord]:
        records = self.next(*events)
        await self.world.append_events(self.run_id, records, **options)
        return records


def error(message: str) -> ErrorInfo:
    return ErrorInfo("ValueError", message, "Traceback ...")


# -- runs ------------------------------------------------------------------------------
async def test_create_run_is_idempotent_by_run_id(storage: Any) -> None:
    wf = uid("wf")
    run = new_run(storage, wf)
    first, created = await storage.create_run(run, lease_owner=None, lease_seconds=30.0)
    again, created_again = await storage.create_run(
        new_run(storage, "other", run.run_id), lease_owner=None, lease_seconds=30.0)
    assert created and not created_again
    assert again == first and again.workflow_name == wf
    assert first.status == RunStatus.PENDING and first.created_at == run.created_at
    assert [e.seq for e in await storage.list_events(run.run_id)] == [0]
    assert await storage.claim_runs(uid("owner"), 10, 30.0) == [run.run_id]


async def test_a_run_created_started_is_running_with_its_start_in_the_log(
        storage: Any) -> None:
    """`NewRun.started` (its creator runs it at once): the run is stored running,
    started when created, its log run_created and run_started at its creation time;
    its next append goes on from seq 2. One alone, then six at once (which a batching
    world may take in one batch)."""
    wf, owner = uid("wf"), uid("owner")
    runs = [NewRun(uid("run"), wf, Raw(b'{"n":1}'), storage.now(), started=True)
            for _ in range(7)]
    results = [await storage.create_run(runs[0], lease_owner=owner, lease_seconds=30.0)]
    results += await asyncio.gather(*(
        storage.create_run(run, lease_owner=owner, lease_seconds=30.0) for run in runs[1:]))
    for (record, created), run in zip(results, runs, strict=True):
        assert created
        stored = await storage.get_run(run.run_id)
        for seen in (record, stored):
            assert (seen.status, seen.started_at) == (RunStatus.RUNNING, run.created_at)
        events = await storage.list_events(run.run_id)
        assert [(e.seq, type(e.event).__name__, e.created_at) for e in events] == [
            (0, "RunCreated", run.created_at), (1, "RunStarted", run.created_at)]
    listed = await storage.list_runs(workflow_name=wf, status="running", limit=10)
    assert {r.run_id for r in listed.items} == {run.run_id for run in runs}
    log = Log(storage, runs[0].run_id, seq=2)
    await log.append(StepStarted("1", "s", 1, Raw(b"[]")), StepCompleted("1", "s", 1, Raw(b"1")))
    await log.append(RunCompleted(Raw(b"1")))
    ended = await storage.get_run(runs[0].run_id)
    assert (ended.status, ended.started_at, ended.steps_completed) == (
        RunStatus.COMPLETED, runs[0].created_at, 1)


async def test_dedup_key_returns_the_live_run_and_is_free_after_it_ends(storage: Any) -> None:
    wf, key = uid("wf"), uid("key")
    first = await create(storage, wf, dedup_key=key)
    same, created = await storage.create_run(new_run(storage, wf, dedup_key=key),
                                             lease_owner=None, lease_seconds=30.0)
    assert not created and same.run_id == first
    await Log(storage, first).append(RunStarted(), RunCompleted(Raw(b"1")))
    second, created = await storage.create_run(new_run(storage, wf, dedup_key=key),
                                               lease_owner=None, lease_seconds=30.0)
    assert created and second.run_id != first


async def test_get_run_of_unknown_id_is_none(storage: Any) -> None:
    assert await storage.get_run(uid("missing")) is None


async def test_list_runs_filters_by_status_and_workflow_name(storage: Any) -> None:
    wf, other = uid("wf"), uid("wf")
    done = await create(storage, wf)
    pending = await create(storage, wf)
    await create(storage, other)
    await Log(storage, done).append(RunStarted(), RunCompleted(Raw(b"1")))
    assert {r.run_id for r in (await storage.list_runs(workflow_name=wf)).items} \
        == {done, pending}
    page = await storage.list_runs(workflow_name=wf, status="completed")
    assert [r.run_id for r in page.items] == [done] and page.next_cursor is None
    page = await storage.list_runs(workflow_name=wf, status=RunStatus.PENDING)
    assert [r.run_id for r in page.items] == [pending]


async def test_list_runs_pages_are_newest_first_with_no_duplicates_or_gaps(
        storage: Any) -> None:
    wf = uid("wf")
    base = dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.UTC)
    # pairs of runs share a created_at: the run id breaks the tie
    expected = []
    for i in range(23):
        at = base + dt.timedelta(seconds=i // 2)
        run_id = f"{wf}-{i:02d}"
        await create(storage, wf, run_id=run_id, created_at=at)
        expected.append((at, run_id))
    expected.sort(reverse=True)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await storage.list_runs(workflow_name=wf, limit=5, cursor=cursor)
        assert len(page.items) <= 5
        seen += [r.run_id for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [run_id for _, run_id in expected]
    exact = await storage.list_runs(workflow_name=wf, limit=23)
    assert len(exact.items) == 23 and exact.next_cursor is None


async def test_list_runs_rejects_a_malformed_cursor(storage: Any) -> None:
    with pytest.raises(ValueError, match="invalid cursor"):
        await storage.list_runs(cursor="not a cursor")


# -- the event log ------------------------------------------------------------------------
async def test_events_come_back_in_seq_order_exactly_as_written(storage: Any) -> None:
    run_id = await create(storage)
    log = Log(storage, run_id)
    written = await log.append(RunStarted(), StepStarted("c1", "fetch", 1, Raw(b"[1]")))
    written += await log.append(StepCompleted("c1", "fetch", 1, Raw(b'{"ok":true}')))
    events = await storage.list_events(run_id)
    assert events[1:] == written
    assert [e.seq for e in events] == [0, 1, 2, 3]
    assert events[0].event_type == "run_created"
    assert [e.seq for e in await storage.list_events(run_id, after_seq=1)] == [2, 3]
    assert [e.seq for e in await storage.list_events(run_id, after_seq=0, limit=2)] == [1, 2]
    assert await storage.list_events(uid("missing")) == []


async def test_timestamps_round_trip_exactly(storage: Any) -> None:
    created_at = dt.datetime(2026, 11, 25, 4, 58, 49, 123456, tzinfo=dt.UTC)
    run_id = await create(storage, created_at=created_at)
    whole_second = dt.datetime(2026, 11, 25, 4, 58, 50, tzinfo=dt.UTC)
    one_micro = dt.datetime(2026, 11, 25, 4, 58, 50, 1, tzinfo=dt.UTC)
    records = [EventRecord(run_id, 1, RunStarted(), whole_second),
               EventRecord(run_id, 2, StepStarted("c1", "s", 1), one_micro)]
    await storage.append_events(run_id, records)
    events = await storage.list_events(run_id)
    assert events[0].created_at == created_at
    assert events[1:] == records
    assert [e.created_at.utcoffset() for e in events] == [dt.timedelta(0)] * 3
    run = await storage.get_run(run_id)
    assert (run.created_at, run.started_at) == (created_at, whole_second)
    steps = await storage.list_steps(run_id)
    assert steps[0].started_at == one_micro


async def test_run_projection_follows_started_and_completed(storage: Any) -> None:
    run_id = await create(storage)
    log = Log(storage, run_id)
    started = await log.append(RunStarted())
    run = await storage.get_run(run_id)
    assert run.status == RunStatus.RUNNING and run.started_at == started[0].created_at
    assert run.completed_at is None and run.output is None
    done = await log.append(RunCompleted(Raw(b'{"items":3}')))
    run = await storage.get_run(run_id)
    assert run.status == RunStatus.COMPLETED and bytes(run.output) == b'{"items":3}'
    assert run.completed_at == run.updated_at == done[0].created_at
    assert run.started_at == started[0].created_at and run.error is None


@pytest.mark.parametrize(("event", "status"), [
    (RunFailed(ErrorInfo("KeyError", "boom", "tb", fatal=True)), RunStatus.FAILED),
    (RunCancelled("user asked"), RunStatus.CANCELLED),
])
async def test_run_projection_records_failure_and_cancellation(
        storage: Any, event: Event, status: RunStatus) -> None:
    run_id = await create(storage)
    ended = await Log(storage, run_id).append(RunStarted(), event)
    run = await storage.get_run(run_id)
    assert run.status == status and run.completed_at == ended[-1].created_at
    assert run.output is None
    assert run.error == getattr(event, "error", None)


async def test_step_projection_follows_retries_to_completion(storage: Any) -> None:
    run_id = await create(storage)
    log = Log(storage, run_id)
    first = await log.append(RunStarted(), StepStarted("c1", "fetch", 1, Raw(b"[5]")))
    [step] = await storage.list_steps(run_id)
    assert (step.step_id, step.correlation_id, step.step_name) == (f"{run_id}:c1", "c1",
                                                                    "fetch")
    assert (step.status, step.attempt, bytes(step.input)) == (StepStatus.RUNNING, 1, b"[5]")
    assert step.started_at == first[1].created_at and step.completed_at is None
    await log.append(StepRetrying("c1", "fetch", 1, error("flaky"), log.world.now()))
    [step] = await storage.list_steps(run_id)
    assert (step.status, step.attempt, step.error) == (StepStatus.PENDING, 1, error("flaky"))
    await log.append(StepStarted("c1", "fetch", 2, Raw(b"[5]")))
    [step] = await storage.list_steps(run_id)
    # a new attempt is running: the last attempt's error no longer describes the step
    assert (step.status, step.attempt, step.error) == (StepStatus.RUNNING, 2, None)
    assert step.started_at == first[1].created_at  # the first start, kept across attempts
    done = await log.append(StepCompleted("c1", "fetch", 2, Raw(b'"ok"')))
    [step] = await storage.list_steps(run_id)
    assert (step.status, step.attempt, bytes(step.output)) == (StepStatus.COMPLETED, 2, b'"ok"')
    assert step.error is None and step.completed_at == done[0].created_at


async def test_steps_started_and_completed_in_one_append_end_as_applied_one_by_one(
        storage: Any) -> None:
    """A step's start and completion in one append (a later attempt too, and parallel
    steps whose completions follow both starts): each world writes them as one change
    of the step, which must leave what the two one after the other leave."""
    run_id = await create(storage)
    log = Log(storage, run_id)
    first = await log.append(RunStarted(), StepStarted("c1", "fetch", 1, Raw(b"[5]")),
                             StepRetrying("c1", "fetch", 1, error("flaky"), storage.now()))
    await log.append(StepStarted("c1", "fetch", 2, Raw(b"[5]")),
                     StepCompleted("c1", "fetch", 2, Raw(b"7")),
                     StepStarted("c2", "fetch", 1, Raw(b"[1]")),
                     StepStarted("c3", "fetch", 1, Raw(b"[2]")),
                     StepCompleted("c3", "fetch", 1, Raw(b"30")),
                     StepCompleted("c2", "fetch", 1, Raw(b"20")))
    steps = {s.correlation_id: s for s in await storage.list_steps(run_id)}
    assert {cid: (s.status, s.attempt, bytes(s.input or b""), bytes(s.output or b""),
                  s.error) for cid, s in steps.items()} == {
        "c1": (StepStatus.COMPLETED, 2, b"[5]", b"7", None),
        "c2": (StepStatus.COMPLETED, 1, b"[1]", b"20", None),
        "c3": (StepStatus.COMPLETED, 1, b"[2]", b"30", None)}
    assert steps["c1"].started_at == first[1].created_at  # the first start, kept
    assert all(s.completed_at is not None for s in steps.values())
    run = await storage.get_run(run_id)
    assert (run.steps_total, run.steps_completed, run.steps_failed, run.steps_running) == (
        3, 3, 0, 0)


async def test_step_projection_records_failure(storage: Any) -> None:
    run_id = await create(storage)
    log = Log(storage, run_id)
    await log.append(RunStarted(), StepStarted("c1", "charge", 1))
    failed = await log.append(StepFailed("c1", "charge", 1, error("card declined")))
    [step] = await storage.list_steps(run_id)
    assert (step.status, step.attempt, step.error) == (StepStatus.FAILED, 1,
                                                       error("card declined"))
    assert step.completed_at == failed[0].created_at and step.output is None


async def test_steps_are_listed_in_the_order_first_started(storage: Any) -> None:
    run_id = await create(storage)
    log = Log(storage, run_id)
    await log.append(RunStarted(), StepStarted("c2", "b", 1), StepStarted("c1", "a", 1))
    await log.append(StepStarted("c3", "c", 1), StepStarted("c2", "b", 2))
    assert [s.correlation_id for s in await storage.list_steps(run_id)] == ["c2", "c1", "c3"]
    assert await storage.list_steps(uid("missing")) == []


async def test_terminal_event_disposes_hooks_and_drops_job_and_inbox(storage: Any) -> None:
    run_id = await create(storage)
    log = Log(storage, run_id)
    token, other = uid("tok"), uid("tok")
    created = await log.append(RunStarted(), HookCreated("h1", token), HookCreated("h2", other))
    hook = await storage.get_hook(token)
    assert (hook.run_id, hook.correlation_id, hook.status) == (run_id, "h1", "active")
    assert hook.created_at == created[1].created_at and hook.disposed_at is None
    assert await storage.resume_hook(token, Raw(b'{"approved":true}')) == run_id
    assert len(await storage.read_inbox(run_id)) == 1
    ended = await log.append(RunCompleted(Raw(b"null")))
    hooks = await storage.list_hooks(run_id)
    assert [(h.token, h.status) for h in hooks] == [(token, "disposed"), (other, "disposed")]
    assert {h.disposed_at for h in hooks} == {ended[0].created_at}
    assert await storage.read_inbox(run_id) == []
    assert await storage.claim_runs(uid("owner"), 10, 30.0) == []
    with pytest.raises(HookNotFoundError):
        await storage.resume_hook(token, Raw(b"1"))


async def test_hook_disposed_event_disposes_only_that_hook(storage: Any) -> None:
    run_id = await create(storage)
    log = Log(storage, run_id)
    keep, drop = uid("tok"), uid("tok")
    await log.append(RunStarted(), HookCreated("h1", keep), HookCreated("h2", drop))
    disposed = await log.append(HookDisposed("h2", drop))
    assert (await storage.get_hook(keep)).status == "active"
    hook = await storage.get_hook(drop)
    assert hook.status == "disposed" and hook.disposed_at == disposed[0].created_at
    assert await storage.get_hook(uid("missing")) is None
    with pytest.raises(HookNotFoundError):
        await storage.resume_hook(drop, Raw(b"1"))


async def test_seq_conflict_raises_lease_lost_and_writes_nothing_of_that_call(
        storage: Any) -> None:
    run_id = await create(storage)
    await Log(storage, run_id).append(RunStarted())
    await storage.request_cancel(run_id)
    [message] = await storage.read_inbox(run_id)
    token = uid("tok")
    stale = Log(storage, run_id, seq=1)  # a worker that missed seq 1 being written
    with pytest.raises(LeaseLostError):
        await storage.append_events(
            run_id, stale.next(HookCreated("h1", token), StepStarted("c1", "s", 1),
                               RunCompleted(Raw(b"1"))),
            inbox_ids=[message.id])
    assert [e.seq for e in await storage.list_events(run_id)] == [0, 1]
    assert await storage.get_hook(token) is None
    assert await storage.list_steps(run_id) == []
    assert (await storage.get_run(run_id)).status == RunStatus.RUNNING
    assert await storage.read_inbox(run_id) == [message]


async def test_hook_token_in_use_by_a_live_hook_raises_conflict(storage: Any) -> None:
    holder, taker = await create(storage), await create(storage)
    token = uid("tok")
    holder_log, taker_log = Log(storage, holder), Log(storage, taker)
    await holder_log.append(RunStarted(), HookCreated("h1", token))
    await taker_log.append(RunStarted())
    with pytest.raises(HookConflictError):
        await storage.append_events(taker, taker_log.next(StepStarted("c1", "s", 1),
                                                          HookCreated("h1", token)))
    assert [e.seq for e in await storage.list_events(taker)] == [0, 1]
    assert await storage.list_steps(taker) == []
    assert (await storage.get_hook(token)).run_id == holder
    # once the holder's hook is gone the token is free again
    await holder_log.append(RunCompleted(Raw(b"null")))
    taker_log.seq = 2
    await taker_log.append(HookCreated("h1", token))
    hook = await storage.get_hook(token)
    assert (hook.run_id, hook.status, hook.disposed_at) == (taker, "active", None)


async def test_append_to_an_unknown_run_raises_run_not_found(storage: Any) -> None:
    run_id = uid("missing")
    with pytest.raises(RunNotFoundError):
        await storage.append_events(run_id, [EventRecord(run_id, 1, RunStarted(),
                                                         storage.now())])


async def test_appends_of_one_run_commit_in_call_order(storage: Any) -> None:
    run_id = await create(storage)
    log = Log(storage, run_id)
    await log.append(RunStarted(), wait=False)
    await log.append(StepStarted("c1", "s", 1), wait=False)
    await log.append(StepCompleted("c1", "s", 1, Raw(b"2")))
    assert [e.seq for e in await storage.list_events(run_id)] == [0, 1, 2, 3]
    assert (await storage.list_steps(run_id))[0].status == StepStatus.COMPLETED


# -- the queue ------------------------------------------------------------------------------
async def test_two_owners_never_hold_one_run(storage: Any) -> None:
    runs = {await create(storage) for _ in range(12)}
    claims = await asyncio.gather(*(storage.claim_runs(f"owner-{i}", 5, 30.0)
                                    for i in range(4)))
    claimed = [run_id for claim in claims for run_id in claim]
    assert len(claimed) == len(set(claimed)) == 12
    assert set(claimed) == runs
    assert await storage.claim_runs("late", 5, 30.0) == []


async def test_claim_takes_the_oldest_available_first_up_to_limit(
        clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    runs = []
    for _ in range(3):
        runs.append(await create(world))
        clock.advance(1)
    assert await world.claim_runs("a", 2, 30.0) == runs[:2]
    assert await world.claim_runs("b", 2, 30.0) == runs[2:]
    assert await world.claim_runs("a", 0, 30.0) == []


async def test_run_created_with_a_lease_is_held_by_its_creator(storage: Any) -> None:
    run, _ = await storage.create_run(new_run(storage, uid("wf")), lease_owner="creator",
                                      lease_seconds=30.0)
    assert await storage.claim_runs("other", 10, 30.0) == []
    assert await storage.renew_leases("creator", 30.0) == {run.run_id}
    assert "creator" in await storage.lease_owners()


async def test_expired_lease_can_be_claimed_by_another_owner(
        clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    run_id = await create(world)
    assert await world.claim_runs("a", 10, 10.0) == [run_id]
    clock.advance(9)
    assert await world.claim_runs("b", 10, 10.0) == []
    clock.advance(1)
    assert await world.claim_runs("b", 10, 10.0) == [run_id]
    assert await world.renew_leases("a", 10.0) == set()
    assert await world.renew_leases("b", 10.0) == {run_id}


async def test_renewed_lease_is_not_claimable_until_it_expires(
        clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    run_id = await create(world)
    await world.claim_runs("a", 10, 10.0)
    clock.advance(8)
    assert await world.renew_leases("a", 10.0) == {run_id}
    clock.advance(8)
    assert await world.claim_runs("b", 10, 10.0) == []
    assert await world.next_wake_at() == clock.now + dt.timedelta(seconds=2)
    clock.advance(2)
    assert await world.claim_runs("b", 10, 10.0) == [run_id]


async def test_released_run_wakes_at_its_wake_time(clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    run_id = await create(world)
    await world.claim_runs("a", 10, 30.0)
    wake_at = clock.now + dt.timedelta(seconds=60)
    await world.release_run(run_id, "a", wake_at)
    assert await world.lease_owners() == []
    assert await world.next_wake_at() == wake_at
    clock.advance(59)
    assert await world.claim_runs("b", 10, 30.0) == []
    clock.advance(1)
    assert await world.claim_runs("b", 10, 30.0) == [run_id]


async def test_run_released_without_wake_time_waits_for_input(
        clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    run_id = await create(world)
    await world.claim_runs("a", 10, 30.0)
    await world.release_run(run_id, "a", None)
    assert await world.next_wake_at() is None
    clock.advance(3600)
    assert await world.claim_runs("b", 10, 30.0) == []
    assert await world.request_cancel(run_id) is True
    assert await world.claim_runs("b", 10, 30.0) == [run_id]


async def test_release_with_pending_input_is_available_at_once(
        clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    run_id = await create(world)
    token = uid("tok")
    await world.claim_runs("a", 10, 30.0)
    await Log(world, run_id).append(RunStarted(), HookCreated("h1", token))
    await world.resume_hook(token, Raw(b'"go"'))  # arrives while "a" holds the run
    await world.release_run(run_id, "a", clock.now + dt.timedelta(days=1))
    assert await world.claim_runs("b", 10, 30.0) == [run_id]


async def test_release_by_a_non_owner_changes_nothing(storage: Any) -> None:
    run_id = await create(storage)
    await storage.claim_runs("a", 10, 30.0)
    await storage.release_run(run_id, "b", None)
    await storage.release_run(uid("missing"), "a", None)
    assert await storage.renew_leases("a", 30.0) == {run_id}


async def test_expire_leases_frees_only_the_dead_owners_runs(storage: Any) -> None:
    runs = [await create(storage) for _ in range(3)]
    assert await storage.claim_runs("dead", 2, 30.0) == runs[:2]
    assert await storage.claim_runs("alive", 2, 30.0) == runs[2:]
    assert await storage.lease_owners() == ["alive", "dead"]
    assert await storage.expire_leases(["dead", "never-held"]) == 2
    assert await storage.expire_leases([]) == 0
    assert await storage.lease_owners() == ["alive"]
    assert sorted(await storage.claim_runs("heir", 10, 30.0)) == sorted(runs[:2])


async def test_next_wake_at_is_the_earliest_time_work_appears(
        clocked: tuple[Any, FakeClock]) -> None:
    world, clock = clocked
    assert await world.next_wake_at() is None
    run_id = await create(world)
    assert await world.next_wake_at() in (None, clock.now)  # available now: nothing to wait
    await world.claim_runs("a", 10, 30.0)
    assert await world.next_wake_at() == clock.now + dt.timedelta(seconds=30)  # lease end
    await world.release_run(run_id, "a", clock.now + dt.timedelta(seconds=5))
    assert await world.next_wake_at() == clock.now + dt.timedelta(seconds=5)


async def test_new_run_wakes_a_waiting_worker(storage: Any) -> None:
    await storage.wait_for_work(0)
    waiter = asyncio.ensure_future(storage.wait_for_work(10))
    await asyncio.sleep(0)
    await create(storage)
    with anyio.fail_after(5):
        await waiter


# -- input from outside a run --------------------------------------------------------------
async def test_request_cancel_queues_a_cancel_only_for_a_live_run(storage: Any) -> None:
    with pytest.raises(RunNotFoundError):
        await storage.request_cancel(uid("missing"))
    run_id = await create(storage)
    assert await storage.request_cancel(run_id) is True
    [message] = await storage.read_inbox(run_id)
    assert (message.run_id, message.kind, message.token, message.payload) == (
        run_id, "cancel", None, None)
    await Log(storage, run_id).append(RunStarted(), RunCancelled())
    assert await storage.request_cancel(run_id) is False
    assert await storage.read_inbox(run_id) == []


async def test_resume_hook_queues_payloads_in_order_and_wakes_the_run(storage: Any) -> None:
    run_id = await create(storage)
    token = uid("tok")
    await Log(storage, run_id).append(RunStarted(), HookCreated("h1", token))
    woken: list[str] = []
    storage.set_inbox_listener(woken.append)
    try:
        assert await storage.resume_hook(token, Raw(b'{"n":1}')) == run_id
        assert await storage.resume_hook(token, Raw(b'{"n":2}')) == run_id
    finally:
        storage.set_inbox_listener(None)
    assert woken == [run_id, run_id]
    inbox = await storage.read_inbox(run_id)
    assert [(m.kind, m.token, bytes(m.payload)) for m in inbox] == [
        ("hook", token, b'{"n":1}'), ("hook", token, b'{"n":2}')]
    assert inbox[0].id < inbox[1].id


async def test_resume_hook_of_unknown_token_raises_hook_not_found(storage: Any) -> None:
    with pytest.raises(HookNotFoundError):
        await storage.resume_hook(uid("tok"), Raw(b"1"))


async def test_append_with_inbox_ids_takes_exactly_those_messages(storage: Any) -> None:
    run_id = await create(storage)
    token = uid("tok")
    log = Log(storage, run_id)
    await log.append(RunStarted(), HookCreated("h1", token))
    for n in (1, 2, 3):
        await storage.resume_hook(token, Raw(str(n).encode()))
    first, second, third = await storage.read_inbox(run_id)
    await log.append(HookReceived("h1", token, first.payload),
                     HookReceived("h1", token, second.payload),
                     inbox_ids=[first.id, second.id])
    assert await storage.read_inbox(run_id) == [third]


# -- streams --------------------------------------------------------------------------------
async def test_stream_chunks_are_stored_in_order_and_never_duplicated(storage: Any) -> None:
    run_id = await create(storage)
    await storage.write_stream(run_id, "out", [(0, Raw(b'"a"')), (1, Raw(b'"b"'))])
    # a retried writer sends 1 again (with other data): the stored chunk is kept
    await storage.write_stream(run_id, "out", [(1, Raw(b'"B"')), (2, Raw(b'"c"'))])
    chunks, closed = await storage.read_stream(run_id, "out")
    assert [(c.index, bytes(c.data)) for c in chunks] == [(0, b'"a"'), (1, b'"b"'),
                                                          (2, b'"c"')]
    assert {c.run_id for c in chunks} == {run_id} and {c.name for c in chunks} == {"out"}
    assert not closed
    chunks, _ = await storage.read_stream(run_id, "out", start=1, limit=1)
    assert [c.index for c in chunks] == [1]
    with pytest.raises(ValueError, match="written before"):
        await storage.write_stream(run_id, "out", [(5, Raw(b'"gap"'))])
    await storage.write_stream(run_id, "out", [(3, Raw(b'"d"'))], close=True)
    chunks, closed = await storage.read_stream(run_id, "out", start=3)
    assert [c.index for c in chunks] == [3] and closed


async def test_list_streams_gives_name_count_and_closed(storage: Any) -> None:
    run_id = await create(storage)
    await storage.write_stream(run_id, "logs", [(0, Raw(b"1")), (1, Raw(b"2"))])
    await storage.write_stream(run_id, "default", [], close=True)
    assert await storage.list_streams(run_id) == [("default", 0, True), ("logs", 2, False)]
    assert await storage.read_stream(run_id, "none") == ([], False)
    with pytest.raises(RunNotFoundError):
        await storage.write_stream(uid("missing"), "out", [(0, Raw(b"1"))])


# -- notifications ----------------------------------------------------------------------------
async def test_wait_run_finished_returns_when_a_terminal_event_is_appended(
        storage: Any) -> None:
    run_id = await create(storage)
    log = Log(storage, run_id)
    await log.append(RunStarted())
    with pytest.raises(TimeoutError):
        await storage.wait_run_finished(run_id, timeout=0.05)
    waiter = asyncio.ensure_future(storage.wait_run_finished(run_id, timeout=10))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await log.append(RunCompleted(Raw(b"42")))
    with anyio.fail_after(2):  # woken, not polled
        run = await waiter
    assert run.status == RunStatus.COMPLETED and bytes(run.output) == b"42"
    with pytest.raises(RunNotFoundError):
        await storage.wait_run_finished(uid("missing"), timeout=1)
