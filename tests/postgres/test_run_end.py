"""A run's end sent alone goes as one plain statement (sql.RUN_END, or
sql.RUN_END_AFTER_STEP after its last step's start and completion) instead of
worldflow_apply: the same rows (the run ended with its step counts, its job and inbox
gone, its live hooks disposed), `run_ended` notified, and in every case it does not
take as is nothing written by it and worldflow_apply's answer."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import msgspec
import pytest

from tests.postgres.test_step_append import _new_run, pg_world, stored
from worldflow import FatalError, start, step, workflow
from worldflow.core.events import (
    NO_METADATA,
    EventRecord,
    HookCreated,
    RunCompleted,
    RunStarted,
    StepCompleted,
    StepStarted,
)
from worldflow.errors import FatalStepError, LeaseLostError, WorldError
from worldflow.worlds.postgres import writer as writer_module

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=1)
RAW = msgspec.Raw(b'{"args":[],"kwargs":{}}')


@step(name="pg_re_inc")
async def inc(x: int) -> int:
    return x + 1


@step(name="pg_re_refuse")
async def refuse(x: int) -> int:
    raise FatalError(f"no {x}")


@workflow(name="pg_re_steps")
async def steps(x: int) -> int:
    return await inc(await inc(x))


@workflow(name="pg_re_empty")
async def empty(x: int) -> dict[str, int]:
    return {"x": x}


@workflow(name="pg_re_fails")
async def fails(x: int) -> int:
    return await refuse(await inc(x))


async def _run_each(world: Any) -> list[str]:
    ids = []
    for wf, arg, expected in ((steps, 1, 3), (empty, 5, {"x": 5}), (fails, 2, None)):
        run = await start(wf, arg, world=world)
        if expected is None:
            with pytest.raises(FatalStepError, match="no 3"):
                await run.result(timeout=30)
        else:
            assert await run.result(timeout=30) == expected
        ids.append(str(run.run_id))
    return ids


async def test_a_lone_run_end_stores_what_worldflow_apply_stores(
        own_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of two steps ends with its last step in one RUN_END_AFTER_STEP, a run of
    none in one RUN_END; a run that fails on a step ends through worldflow_apply (its
    end follows a failure, not a completion). With the statements turned off,
    worldflow_apply stores the same rows."""
    async with pg_world(own_db) as world:
        [committer] = world._writers
        commits = committer.queue.commits
        fast = await _run_each(world)
        assert (committer.run_ends, committer.run_end_fallbacks) == (2, 0)
        assert committer.queue.commits - commits == 3 + 2 + 3  # one commit a write
        monkeypatch.setattr(writer_module, "run_end_args", lambda write, channel: None)
        slow = await _run_each(world)
        assert committer.run_ends == 2
    conn = await asyncpg.connect(own_db)
    try:
        ours = [await stored(conn, run_id) for run_id in fast]
        theirs = [await stored(conn, run_id) for run_id in slow]
        jobs = await conn.fetchval("SELECT count(*) FROM workflow_jobs")
        ended = await conn.fetch("SELECT id, completed_at = updated_at, error::text "
                                 "FROM workflow_runs WHERE id = ANY($1::text[]) "
                                 "ORDER BY created_at", fast)
    finally:
        await conn.close()
    assert ours == theirs
    assert [r["run"][:6] for r in ours] == [("completed", "3", 2, 2, 0, 0),
                                            ("completed", '{"x":5}', 0, 0, 0, 0),
                                            ("failed", None, 2, 1, 1, 0)]
    assert [e[1] for e in ours[0]["events"]] == [
        "run_created", "run_started", "step_started", "step_completed", "step_started",
        "step_completed", "run_completed"]
    assert [(r[0], r[1]) for r in ended] == [(run_id, True) for run_id in fast]
    assert ended[2][2] is not None and "no 3" in ended[2][2]
    assert jobs == 0


def _ending(run_id: str, seq: int) -> list[EventRecord]:
    return [EventRecord(run_id, seq, StepStarted("1", "s", 1, msgspec.Raw(b"[7]")), T0),
            EventRecord(run_id, seq + 1, StepCompleted("1", "s", 1, msgspec.Raw(b"8")), T1),
            EventRecord(run_id, seq + 2, RunCompleted(msgspec.Raw(b"8")), T1)]


async def test_a_run_end_disposes_its_live_hooks_and_notifies(opened: Any) -> None:
    world, conn = opened
    [committer] = world._writers
    notices: list[str] = []
    listener = await asyncpg.connect(world.connection_string)
    await listener.add_listener(committer._channel,
                                lambda *args: notices.append(args[-1]))
    try:
        await _new_run(world, "hooked")
        await world.append_events("hooked", [
            EventRecord("hooked", 1, RunStarted(), T0),
            EventRecord("hooked", 2, HookCreated("h", "tok-1", NO_METADATA), T0)])
        assert await conn.fetchval(
            "SELECT status FROM workflow_hooks WHERE token = 'tok-1'") == "active"
        await world.append_events("hooked", _ending("hooked", 3))
        assert (committer.run_ends, committer.run_end_fallbacks) == (1, 0)
        hook = await conn.fetchrow(
            "SELECT status, disposed_at FROM workflow_hooks WHERE token = 'tok-1'")
        assert tuple(hook) == ("disposed", T1)
        run = await world.get_run("hooked")
        assert run is not None
        assert (run.status, run.steps_total, run.steps_completed, run.completed_at) == (
            "completed", 1, 1, T1)
        assert await conn.fetchval(
            "SELECT count(*) FROM workflow_jobs WHERE run_id = 'hooked'") == 0
        for _ in range(100):
            if any('"hooked"' in n and "run_ended" in n for n in notices):
                break
            await asyncio.sleep(0.01)
        assert any('"hooked"' in n and "run_ended" in n for n in notices)
    finally:
        await listener.close()


async def test_an_end_that_does_not_follow_the_log_writes_nothing(opened: Any) -> None:
    """A gap in seq, or a seq already taken: the statement writes nothing (the run
    stays live, its job stays), and the caller gets worldflow_apply's answer."""
    world, conn = opened
    [committer] = world._writers
    await _new_run(world, "gap")
    await world.append_events("gap", [EventRecord("gap", 1, RunStarted(), T0)])
    with pytest.raises(LeaseLostError, match="does not follow"):
        await world.append_events("gap", _ending("gap", 5))
    with pytest.raises(LeaseLostError):
        await world.append_events("gap", [EventRecord("gap", 1, RunCompleted(RAW), T1)])
    run = await world.get_run("gap")
    assert run is not None and run.status == "running"
    assert await conn.fetchval("SELECT count(*) FROM workflow_events "
                               "WHERE workflow_run_id = 'gap'") == 2
    assert await conn.fetchval("SELECT count(*) FROM workflow_jobs "
                               "WHERE run_id = 'gap'") == 1
    assert (committer.run_ends, committer.run_end_fallbacks) == (2, 2)
    await world.append_events("gap", _ending("gap", 2))
    run = await world.get_run("gap")
    assert run is not None and (run.status, run.steps_completed) == ("completed", 1)


async def test_the_same_end_sent_again_counts_once(opened: Any) -> None:
    world, conn = opened
    await _new_run(world, "again")
    await world.append_events("again", [EventRecord("again", 1, RunStarted(), T0)])
    await world.append_events("again", _ending("again", 2))
    await world.append_events("again", _ending("again", 2))
    assert await conn.fetchval("SELECT count(*) FROM workflow_events "
                               "WHERE workflow_run_id = 'again'") == 5
    run = await world.get_run("again")
    assert run is not None and (run.status, run.steps_total) == ("completed", 1)


async def test_a_value_postgres_refuses_fails_only_its_end(opened: Any) -> None:
    world, conn = opened
    [committer] = world._writers
    await _new_run(world, "nul")
    await world.append_events("nul", [EventRecord("nul", 1, RunStarted(), T0)])
    bad = [EventRecord("nul", 2, StepStarted("b\x00d", "s", 1, msgspec.Raw(b"[7]")), T0),
           EventRecord("nul", 3, StepCompleted("b\x00d", "s", 1, msgspec.Raw(b"8")), T1),
           EventRecord("nul", 4, RunCompleted(msgspec.Raw(b"8")), T1)]
    with pytest.raises(WorldError, match="NUL"):
        await world.append_events("nul", bad)
    assert committer.run_end_fallbacks == 1
    assert await conn.fetchval("SELECT count(*) FROM workflow_events "
                               "WHERE workflow_run_id = 'nul'") == 2
    await world.append_events("nul", _ending("nul", 2))
    run = await world.get_run("nul")
    assert run is not None and run.status == "completed"
