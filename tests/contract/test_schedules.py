"""Cron schedules on every world: storage, idempotent create, pause/resume/delete,
catch-up modes, run ids and `scheduled_at`, and time zones with DST.

The worlds here run on a `VirtualTimers` clock that moves only when the test moves it,
so "a worker was down for five hours" is one `move_to`.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import time
from typing import TYPE_CHECKING, Any

import pytest

import worldflow
from tests.conftest import WORLD_NAMES, make_world
from worldflow import (
    ScheduleNotFoundError,
    create_schedule,
    delete_schedule,
    get_run,
    get_workflow_metadata,
    list_schedules,
    pause_schedule,
    resume_schedule,
    step,
    workflow,
)
from worldflow.core import registry
from worldflow.core.schedules import MAX_CATCHUP, due_ticks, next_tick, tick_run_id
from worldflow.testing import VirtualTimers, testing_world

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from worldflow.worlds import World

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 26, 3, 0, 30, tzinfo=UTC)

BODY_RUNS: collections.Counter[str] = collections.Counter()
SEEN: dict[str, Any] = {}


@step(name="sched_body")
async def body(label: str) -> str:
    meta = get_workflow_metadata()
    BODY_RUNS[meta.run_id] += 1
    SEEN[meta.run_id] = meta.scheduled_at  # as the step sees it
    return f"{label}:{meta.run_id}"


@workflow(name="sched_report")
async def report(label: str = "tick") -> dict[str, Any]:
    meta = get_workflow_metadata()
    out = await body(label)
    return {"out": out, "scheduled_at": meta.scheduled_at}


@workflow(name="sched_plain")
async def plain() -> Any:
    return get_workflow_metadata().scheduled_at


@pytest.fixture(autouse=True)
def fresh_counts() -> None:
    # run ids repeat across the worlds a test runs on
    BODY_RUNS.clear()
    SEEN.clear()


class Clocked:
    """A world on a virtual clock, opened (not started) or started by the test."""

    def __init__(self, world: World, timers: VirtualTimers) -> None:
        self.world = world
        self.timers = timers

    def move(self, **delta: float) -> None:
        self.timers.move_to(self.timers.now() + dt.timedelta(**delta))


@pytest.fixture(params=WORLD_NAMES)
async def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Clocked]:
    timers = VirtualTimers(T0)
    w = make_world(request.param, tmp_path, request, clock=timers, queue_concurrency=20)
    await w.open()
    try:
        yield Clocked(w, timers)
    finally:
        await w.close()


async def wait_for_runs(world: World, run_ids: list[str], timeout: float = 30.0
                        ) -> list[Any]:
    results = []
    for run_id in run_ids:
        deadline = time.monotonic() + timeout
        while await world.get_run(run_id) is None:
            assert time.monotonic() < deadline, f"run {run_id} was never started"
            await asyncio.sleep(0.02)
        run = await get_run(run_id, world=world)
        results.append(await run.result(timeout=timeout))
    return results


async def scheduled_ids(world: World, schedule_id: str) -> list[str]:
    page = await world.list_runs(limit=5000)
    return sorted(r.run_id for r in page.items if r.run_id.startswith(schedule_id + "@"))


# -- storage and the public functions ---------------------------------------------------
async def test_create_schedule_is_idempotent_and_updates_in_place(clocked: Clocked) -> None:
    w = clocked.world
    first = await create_schedule(report, cron="0 * * * *", schedule_id="idem",
                                  args=("a",), world=w)
    assert (first.schedule_id, first.workflow_name, first.cron, first.timezone,
            first.catchup, first.paused) == ("idem", "sched_report", "0 * * * *", "UTC",
                                             "latest", False)
    assert first.last_tick == T0  # no tick before the schedule existed runs
    await pause_schedule("idem", world=w)
    clocked.move(minutes=5)
    again = await create_schedule(report, cron="*/10 * * * *", schedule_id="idem",
                                  args=("b",), timezone="Europe/Berlin", catchup="all",
                                  world=w)
    assert (again.cron, again.timezone, again.catchup) == ("*/10 * * * *", "Europe/Berlin",
                                                           "all")
    assert again.paused is True  # re-creating does not resume it
    assert again.created_at == T0 and again.last_tick == T0
    assert bytes(again.input) != bytes(first.input)
    listed = await list_schedules(world=w)
    assert [s.schedule_id for s in listed] == ["idem"]
    assert listed[0] == again


async def test_default_schedule_id_is_the_workflow_name(clocked: Clocked) -> None:
    stored = await create_schedule(plain, cron="*/5 * * * *", world=clocked.world)
    assert stored.schedule_id == "sched_plain"
    assert await clocked.world.get_schedule("sched_plain") == stored


async def test_pause_resume_delete_and_unknown_ids(clocked: Clocked) -> None:
    w = clocked.world
    await create_schedule(plain, cron="0 * * * *", schedule_id="prd", world=w)
    assert (await pause_schedule("prd", world=w)).paused is True
    assert (await pause_schedule("prd", world=w)).paused is True  # idempotent
    clocked.move(hours=3)
    resumed = await resume_schedule("prd", world=w)
    # ticks that passed while paused are not caught up
    assert resumed.paused is False and resumed.last_tick == clocked.timers.now()
    await delete_schedule("prd", world=w)
    assert await list_schedules(world=w) == []
    for fn in (pause_schedule, resume_schedule, delete_schedule):
        with pytest.raises(ScheduleNotFoundError, match="schedule not found: nope"):
            await fn("nope", world=w)
    with pytest.raises(LookupError):  # a KeyError-like error
        await pause_schedule("nope", world=w)


async def test_advance_schedule_is_a_compare_and_set(clocked: Clocked) -> None:
    w = clocked.world
    await create_schedule(plain, cron="0 * * * *", schedule_id="cas", world=w)
    later = T0 + dt.timedelta(hours=1)
    assert await w.advance_schedule("cas", T0, later) is True
    assert await w.advance_schedule("cas", T0, later + dt.timedelta(hours=1)) is False
    assert (await w.get_schedule("cas")).last_tick == later  # type: ignore[union-attr]
    assert await w.advance_schedule("missing", T0, later) is False


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "* * *"}, "cron"),
    ({"cron": ""}, "cron"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"catchup": "some"}, "catchup"),
    ({"schedule_id": "bad id"}, "schedule_id"),
])
async def test_bad_schedule_input_names_the_field_and_stores_nothing(
        clocked: Clocked, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        await create_schedule(plain, **{"cron": "* * * * *", **kwargs}, world=clocked.world)
    assert await list_schedules(world=clocked.world) == []


async def test_schedule_arguments_are_checked_against_the_workflow(clocked: Clocked) -> None:
    with pytest.raises(TypeError, match="sched_plain"):
        await create_schedule(plain, cron="* * * * *", args=(1,), world=clocked.world)
    with pytest.raises(TypeError, match="@workflow"):
        await create_schedule(body, cron="* * * * *", world=clocked.world)  # a step
    assert await list_schedules(world=clocked.world) == []


# -- ticks start runs ---------------------------------------------------------------------
async def test_each_tick_starts_one_run_with_its_id_and_scheduled_at(clocked: Clocked) -> None:
    w = clocked.world
    await create_schedule(report, cron="0 * * * *", schedule_id="hourly", args=("h",),
                          world=w)
    await w.start()
    ticks = [dt.datetime(2026, 11, 26, h, tzinfo=UTC) for h in (4, 5)]
    ids = [tick_run_id("hourly", t) for t in ticks]
    assert ids == ["hourly@2026-11-26T04:00:00Z", "hourly@2026-11-26T05:00:00Z"]
    for tick, run_id in zip(ticks, ids, strict=True):
        clocked.timers.move_to(tick)  # fires the scheduler's timer
        [result] = await wait_for_runs(w, [run_id])
        assert result["out"] == f"h:{run_id}"
        assert dt.datetime.fromisoformat(str(result["scheduled_at"])) == tick
        assert SEEN[run_id] == tick and SEEN[run_id].tzinfo is not None
    assert await scheduled_ids(w, "hourly") == ids
    assert [BODY_RUNS[i] for i in ids] == [1, 1]


async def test_unscheduled_runs_have_no_scheduled_at(world: World) -> None:
    run = await worldflow.start(plain, world=world)
    assert await run.result(timeout=30) is None


@pytest.mark.parametrize(("catchup", "expected_hours"), [
    ("latest", [8]),
    ("all", [4, 5, 6, 7, 8]),
    ("none", []),
])
async def test_catchup_of_ticks_missed_while_no_worker_ran(
        clocked: Clocked, catchup: str, expected_hours: list[int]) -> None:
    w = clocked.world
    sid = f"missed-{catchup}"
    await create_schedule(report, cron="0 * * * *", schedule_id=sid, catchup=catchup,
                          world=w)
    clocked.move(hours=5, minutes=10)  # no worker: 04:00 ... 08:00 pass
    await w.start()
    expected = [tick_run_id(sid, dt.datetime(2026, 11, 26, h, tzinfo=UTC))
                for h in expected_hours]
    await wait_for_runs(w, expected)
    await asyncio.sleep(0.3)  # anything more would have been created by now
    assert await scheduled_ids(w, sid) == expected
    stored = await w.get_schedule(sid)
    assert stored is not None and stored.last_tick == dt.datetime(2026, 11, 26, 8, tzinfo=UTC)
    # from here on, every mode runs each tick
    clocked.timers.move_to(dt.datetime(2026, 11, 26, 9, tzinfo=UTC))
    nine = tick_run_id(sid, dt.datetime(2026, 11, 26, 9, tzinfo=UTC))
    await wait_for_runs(w, [nine])
    assert await scheduled_ids(w, sid) == [*expected, nine]
    assert all(BODY_RUNS[i] == 1 for i in [*expected, nine])


async def test_catchup_all_is_bounded(clocked: Clocked) -> None:
    w = clocked.world
    await create_schedule(plain, cron="* * * * *", schedule_id="flood", catchup="all",
                          world=w)
    stored = await w.get_schedule("flood")
    assert stored is not None
    ticks = due_ticks(stored, T0 + dt.timedelta(days=2), MAX_CATCHUP)
    assert len(ticks) == MAX_CATCHUP == 1000
    assert ticks[0] == dt.datetime(2026, 11, 28, 3, 0, tzinfo=UTC)  # the most recent ones


async def test_paused_schedule_starts_nothing_and_resumes_at_the_next_tick(
        clocked: Clocked) -> None:
    w = clocked.world
    await create_schedule(report, cron="0 * * * *", schedule_id="pz", catchup="all", world=w)
    await pause_schedule("pz", world=w)
    await w.start()
    clocked.move(hours=2)
    await asyncio.sleep(0.3)
    assert await scheduled_ids(w, "pz") == []
    await resume_schedule("pz", world=w)
    clocked.timers.move_to(dt.datetime(2026, 11, 26, 6, tzinfo=UTC))
    six = tick_run_id("pz", dt.datetime(2026, 11, 26, 6, tzinfo=UTC))
    await wait_for_runs(w, [six])
    assert await scheduled_ids(w, "pz") == [six]  # 04:00 and 05:00 passed while paused


async def test_deleted_schedule_starts_no_more_runs(clocked: Clocked) -> None:
    w = clocked.world
    await create_schedule(report, cron="0 * * * *", schedule_id="gone", world=w)
    await w.start()
    clocked.timers.move_to(dt.datetime(2026, 11, 26, 4, tzinfo=UTC))
    await wait_for_runs(w, ["gone@2026-11-26T04:00:00Z"])
    await delete_schedule("gone", world=w)
    clocked.timers.move_to(dt.datetime(2026, 11, 26, 6, tzinfo=UTC))
    await asyncio.sleep(0.3)
    assert await scheduled_ids(w, "gone") == ["gone@2026-11-26T04:00:00Z"]


async def test_two_workers_on_one_world_start_each_tick_once(clocked: Clocked) -> None:
    # a second scheduler (as another process would have) racing the engine's own
    from worldflow.core.schedules import Scheduler

    w = clocked.world
    await create_schedule(report, cron="*/10 * * * *", schedule_id="race", catchup="all",
                          world=w)
    await w.start()
    engine = w.engine  # type: ignore[attr-defined]
    other = Scheduler(engine)
    clocked.move(hours=1)
    await asyncio.gather(other.start_due(), other.start_due(), engine.scheduler.start_due())
    ids = await scheduled_ids(w, "race")
    assert len(ids) == 6 == len(set(ids))
    await wait_for_runs(w, ids)
    assert all(BODY_RUNS[i] == 1 for i in ids)


# -- time zones -----------------------------------------------------------------------------
def test_dst_spring_forward_runs_a_skipped_time_once_after_the_gap() -> None:
    # cronsim follows Debian cron: 02:30 does not exist in Berlin on 2026-03-29 (clocks
    # jump from 02:00 to 03:00), so that day's tick is at 03:00 local (01:00 UTC)
    after = dt.datetime(2026, 3, 27, 12, tzinfo=UTC)
    ticks = []
    for _ in range(3):
        after = next_tick("30 2 * * *", "Europe/Berlin", after)
        ticks.append(after)
    assert ticks == [dt.datetime(2026, 3, 28, 1, 30, tzinfo=UTC),   # 02:30 CET
                     dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC),    # 03:00 CEST
                     dt.datetime(2026, 3, 30, 0, 30, tzinfo=UTC)]   # 02:30 CEST


def test_dst_fall_back_runs_a_repeated_time_once() -> None:
    after = dt.datetime(2026, 10, 24, 12, tzinfo=UTC)
    ticks = []
    for _ in range(2):
        after = next_tick("30 2 * * *", "Europe/Berlin", after)
        ticks.append(after)
    assert ticks == [dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC),   # the first 02:30
                     dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]


async def test_daily_schedule_in_berlin_across_spring_forward() -> None:
    start_at = dt.datetime(2026, 3, 27, 12, tzinfo=UTC)
    async with testing_world(auto_skip=False, start_at=start_at) as w:
        await create_schedule(report, cron="30 2 * * *", schedule_id="berlin",
                              timezone="Europe/Berlin", world=w)
        await w.advance("3d")
        ids = await scheduled_ids(w, "berlin")
        assert ids == ["berlin@2026-03-28T01:30:00Z", "berlin@2026-03-29T01:00:00Z",
                       "berlin@2026-03-30T00:30:00Z"]
        results = await wait_for_runs(w, ids)
        assert [dt.datetime.fromisoformat(r["scheduled_at"]) for r in results] == [
            dt.datetime(2026, 3, 28, 1, 30, tzinfo=UTC),
            dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
            dt.datetime(2026, 3, 30, 0, 30, tzinfo=UTC)]


# -- the virtual clock ----------------------------------------------------------------------
async def test_three_hours_of_minutely_ticks_on_the_test_clock() -> None:
    async with testing_world(auto_skip=False, start_at=T0) as w:
        await create_schedule(report, cron="* * * * *", schedule_id="minutely", world=w)
        began = time.monotonic()
        await w.advance("3h")
        elapsed = time.monotonic() - began
        ids = await scheduled_ids(w, "minutely")
        expected = [tick_run_id("minutely", T0.replace(second=0) + dt.timedelta(minutes=m))
                    for m in range(1, 181)]
        assert ids == expected
        statuses = {(await w.get_run(i)).status for i in ids}  # type: ignore[union-attr]
        assert statuses == {"completed"}
        assert all(BODY_RUNS[i] == 1 for i in ids)
        assert elapsed < 30, elapsed  # about a second on a quiet machine


async def test_wf_world_skips_to_each_tick_by_itself(wf_world: Any) -> None:
    await create_schedule(report, cron="* * * * *", schedule_id="auto")
    began = time.monotonic()
    while len(await scheduled_ids(wf_world, "auto")) < 120:
        assert time.monotonic() - began < 60
        await asyncio.sleep(0.01)
    await pause_schedule("auto")
    await wf_world.settle()
    ids = await scheduled_ids(wf_world, "auto")
    first = T0.__class__.fromisoformat(ids[0].split("@")[1].replace("Z", "+00:00"))
    assert ids == [tick_run_id("auto", first + dt.timedelta(minutes=m))
                   for m in range(len(ids))]  # no tick skipped, none twice
    await wait_for_runs(wf_world, ids)
    assert all(BODY_RUNS[i] == 1 for i in ids)
    # 120 minutely ticks span 119 minutes; the clock stands at the last one (or after it)
    assert len(ids) >= 120
    assert wf_world.now() >= first + dt.timedelta(minutes=len(ids) - 1)
    assert first - wf_world.started_at <= dt.timedelta(minutes=1)


async def test_schedule_declared_in_code_is_created_when_a_worker_starts() -> None:
    @workflow(name="sched_declared", schedule="*/15 * * * *")
    async def declared() -> Any:
        return get_workflow_metadata().scheduled_at

    try:
        async with testing_world(auto_skip=False, start_at=T0) as w:
            [stored] = await list_schedules(world=w)
            assert (stored.schedule_id, stored.workflow_name, stored.cron) == (
                "sched_declared", "sched_declared", "*/15 * * * *")
            await w.advance("31m")
            assert await scheduled_ids(w, "sched_declared") == [
                "sched_declared@2026-11-26T03:15:00Z", "sched_declared@2026-11-26T03:30:00Z"]
    finally:
        registry._workflows.pop("sched_declared", None)


def test_bad_declared_schedule_is_refused_at_decoration() -> None:
    with pytest.raises(ValueError, match="cron"):
        @workflow(name="sched_bad_decl", schedule="every minute")
        async def bad() -> None: ...
    with pytest.raises(TypeError, match="sched_needs_args"):
        @workflow(name="sched_needs_args", schedule="* * * * *")
        async def needs(x: int) -> None: ...
    assert registry.get_workflow("sched_bad_decl") is None
    assert registry.get_workflow("sched_needs_args") is None


async def test_catchup_none_still_runs_a_tick_that_is_late_not_missed(clocked: Clocked) -> None:
    # "none" skips ticks missed while no worker ran; a tick seen within ON_TIME (60 s)
    # of its time is late (a slow start, a busy loop), and still runs
    w = clocked.world
    await create_schedule(report, cron="0 * * * *", schedule_id="late", catchup="none",
                          world=w)
    clocked.timers.move_to(dt.datetime(2026, 11, 26, 4, 0, 40, tzinfo=UTC))
    await w.start()
    await wait_for_runs(w, ["late@2026-11-26T04:00:00Z"])
    assert await scheduled_ids(w, "late") == ["late@2026-11-26T04:00:00Z"]
