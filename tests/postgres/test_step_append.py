"""A step's append sent alone goes as one plain statement (sql.STEP_APPEND) instead of
worldflow_apply: the same rows, and in every case it does not take as is (a fence that
does not hold, a write sent again, a value Postgres refuses) nothing written by it and
worldflow_apply's answer. Also: schema version 6 (events keyed by run and seq)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import msgspec
import pytest

from worldflow import create_world, start, step, workflow
from worldflow.cli.postgres_setup import postgres_setup
from worldflow.core.events import (
    ErrorInfo,
    EventRecord,
    RunCompleted,
    RunStarted,
    StepCompleted,
    StepRetrying,
    StepStarted,
)
from worldflow.core.records import NewRun
from worldflow.errors import LeaseLostError, WorldError
from worldflow.worlds.postgres import writer as writer_module
from worldflow.worlds.postgres.schema import SCHEMA_VERSION, apply_migrations

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=1)


@step(name="pg_sa_double")
async def double(x: int) -> int:
    return 2 * x


@workflow(name="pg_sa_flow")
async def flow(x: int) -> int:
    for _ in range(3):
        x = await double(x)
    return x


def pg_world(url: str) -> Any:
    return create_world("postgres", connection_string=url,
                        job_prefix="sa" + uuid.uuid4().hex[:8])


async def stored(conn: asyncpg.Connection, run_id: str) -> dict[str, Any]:
    """What a run left in the database, without ids and times."""
    events = await conn.fetch(
        "SELECT seq, event_type, correlation_id, payload::text FROM workflow_events "
        "WHERE workflow_run_id = $1 ORDER BY seq", run_id)
    steps = await conn.fetch(
        "SELECT correlation_id, step_name, status, attempt, input::text, output::text, "
        "error::text, started_at IS NOT NULL, completed_at IS NOT NULL "
        "FROM workflow_steps WHERE workflow_run_id = $1 ORDER BY position", run_id)
    run = await conn.fetchrow(
        "SELECT status, output::text, steps_total, steps_completed, steps_failed, "
        "steps_running, started_at IS NOT NULL FROM workflow_runs WHERE id = $1", run_id)
    return {"events": [(e[0], e[1], e[2], _without_times(e[3])) for e in events],
            "steps": [tuple(s) for s in steps], "run": tuple(run)}


def _without_times(payload: str) -> dict[str, Any]:
    value: dict[str, Any] = msgspec.json.decode(payload)
    return {k: v for k, v in value.items() if not k.endswith("_at")}


async def test_a_lone_step_append_stores_what_worldflow_apply_stores(
        own_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run alone, a run of three steps is four commits: its creation, its start with
    the first step (one STEP_APPEND), the second step (another), and the last step
    with the run's end (RUN_END_AFTER_STEP, tests/postgres/test_run_end.py). With the
    statement turned off, worldflow_apply stores the same rows."""
    async with pg_world(own_db) as world:
        [committer] = world._writers
        commits = committer.queue.commits
        fast = await start(flow, 1, world=world)
        assert await fast.result(timeout=30) == 8
        assert committer.queue.commits - commits == 4
        assert committer.step_appends == 2
        assert committer.step_append_fallbacks == 0
        monkeypatch.setattr(writer_module, "step_append_args", lambda write: None)
        slow = await start(flow, 1, world=world)
        assert await slow.result(timeout=30) == 8
        assert committer.step_appends == 2
    conn = await asyncpg.connect(own_db)
    try:
        ours, theirs = await stored(conn, fast.run_id), await stored(conn, slow.run_id)
    finally:
        await conn.close()
    assert ours == theirs
    assert ours["run"] == ("completed", "8", 3, 3, 0, 0, True)
    assert [(s[2], s[3], msgspec.json.decode(s[4])["args"], s[5], s[7], s[8])
            for s in ours["steps"]] == [("completed", 1, [1], "2", True, True),
                                        ("completed", 1, [2], "4", True, True),
                                        ("completed", 1, [4], "8", True, True)]
    assert [e[1] for e in ours["events"]] == [
        "run_created", "run_started", "step_started", "step_completed", "step_started",
        "step_completed", "step_started", "step_completed", "run_completed"]


async def _new_run(world: Any, run_id: str) -> None:
    raw = msgspec.Raw(b'{"args":[],"kwargs":{}}')
    await world.create_run(NewRun(run_id, "pg_sa_flow", raw, T0), lease_owner=None,
                           lease_seconds=30)


def _pair(run_id: str, seq: int, cid: str, name: str = "s") -> list[EventRecord]:
    return [EventRecord(run_id, seq, StepStarted(cid, name, 1, msgspec.Raw(b"[7]")), T0),
            EventRecord(run_id, seq + 1, StepCompleted(cid, name, 1, msgspec.Raw(b"1")), T1)]


async def _counts(world: Any, conn: asyncpg.Connection, run_id: str
                  ) -> tuple[int, int, int]:
    """The run's events and step rows, and its step count as the world reads it."""
    events = await conn.fetchval(
        "SELECT count(*) FROM workflow_events WHERE workflow_run_id = $1", run_id)
    steps = await conn.fetchval(
        "SELECT count(*) FROM workflow_steps WHERE workflow_run_id = $1", run_id)
    run = await world.get_run(run_id)
    return events, steps, run.steps_total


async def test_an_append_that_does_not_follow_the_log_writes_nothing(opened: Any) -> None:
    """A gap in seq (an earlier append lost) or a seq already taken (another process
    appended first): the statement writes nothing, and worldflow_apply's answer, a
    lost lease, is the caller's."""
    world, conn = opened
    [committer] = world._writers
    await _new_run(world, "gap")
    await world.append_events("gap", [EventRecord("gap", 1, RunStarted(), T0)])
    with pytest.raises(LeaseLostError, match="does not follow"):
        await world.append_events("gap", _pair("gap", 5, "1"))
    assert await _counts(world, conn, "gap") == (2, 0, 0)
    await world.append_events("gap", _pair("gap", 2, "1"))
    with pytest.raises(LeaseLostError):
        await world.append_events("gap", _pair("gap", 3, "2"))  # seq 3 is taken
    assert await _counts(world, conn, "gap") == (4, 1, 1)
    assert (committer.step_appends, committer.step_append_fallbacks) == (3, 2)


async def test_a_live_runs_step_counts_are_read_from_its_steps_and_stored_at_its_end(
        opened: Any) -> None:
    """A step's commit leaves its run's row alone: while the run is live, its step
    counts are counted from its step rows as it is read (by id, in a listing, in a
    tag-filtered listing); its end stores them on the row, where they are read from."""
    world, conn = opened
    raw = msgspec.Raw(b'{"args":[],"kwargs":{}}')
    await world.create_run(NewRun("live", "pg_sa_flow", raw, T0, tags={"k": "v"}),
                           lease_owner=None, lease_seconds=30)
    await world.append_events("live", [EventRecord("live", 1, RunStarted(), T0),
                                       *_pair("live", 2, "1")])
    await world.append_events("live", [
        EventRecord("live", 4, StepStarted("2", "s", 1, msgspec.Raw(b"[8]")), T0)])

    async def read() -> list[tuple[int, int, int, int]]:
        run = await world.get_run("live")
        listed = (await world.list_runs()).items
        tagged = (await world.list_runs(tags={"k": "v"})).items
        return [(r.steps_total, r.steps_completed, r.steps_running, r.steps_failed)
                for r in (run, *listed, *tagged) if r is not None and r.run_id == "live"]

    stored_counts = ("SELECT steps_total, steps_completed, steps_running, steps_failed "
                     "FROM workflow_runs WHERE id = 'live'")
    assert await read() == [(2, 1, 1, 0)] * 3
    assert tuple(await conn.fetchrow(stored_counts)) == (0, 0, 0, 0)  # not written
    await world.append_events("live", [
        EventRecord("live", 5, StepCompleted("2", "s", 1, msgspec.Raw(b"2")), T1),
        EventRecord("live", 6, RunCompleted(msgspec.Raw(b"2")), T1)])
    assert tuple(await conn.fetchrow(stored_counts)) == (2, 2, 0, 0)
    assert await read() == [(2, 2, 0, 0)] * 3


async def test_a_later_attempt_goes_as_the_statement_too(opened: Any) -> None:
    """A step's second attempt, started and completed in one append after its first
    failed, goes as the statement as a first attempt does (a step is its events): it
    reads as attempt 2, completed, the first attempt's error cleared."""
    world, conn = opened
    [committer] = world._writers
    await _new_run(world, "retry")
    await world.append_events("retry", [
        EventRecord("retry", 1, RunStarted(), T0),
        EventRecord("retry", 2, StepStarted("1", "s", 1, msgspec.Raw(b"[7]")), T0),
        EventRecord("retry", 3, StepRetrying("1", "s", 1, ErrorInfo("E", "no"), T1), T0)])
    row = await conn.fetchrow("SELECT status, attempt, error::text FROM workflow_steps "
                              "WHERE workflow_run_id = 'retry'")
    assert (row[0], row[1], msgspec.json.decode(row[2])["message"]) == ("pending", 1, "no")
    tried, fallbacks = committer.step_appends, committer.step_append_fallbacks
    await world.append_events("retry", [
        EventRecord("retry", 4, StepStarted("1", "s", 2, msgspec.Raw(b"[7]")), T1),
        EventRecord("retry", 5, StepCompleted("1", "s", 2, msgspec.Raw(b"1")), T1)])
    assert (committer.step_appends, committer.step_append_fallbacks) == (tried + 1, fallbacks)
    row = await conn.fetchrow("SELECT status, attempt, input::text, output::text, error "
                              "FROM workflow_steps WHERE workflow_run_id = 'retry'")
    assert tuple(row) == ("completed", 2, "[7]", "1", None)
    assert await _counts(world, conn, "retry") == (6, 1, 1)


async def test_the_same_append_sent_again_counts_once(opened: Any) -> None:
    """A write whose commit was not confirmed is sent again: the second time the events
    are there already (same seq, type and time), and it is done, not doubled."""
    world, conn = opened
    await _new_run(world, "again")
    records = [EventRecord("again", 1, RunStarted(), T0), *_pair("again", 2, "1")]
    await world.append_events("again", records)
    await world.append_events("again", records)
    assert await _counts(world, conn, "again") == (4, 1, 1)
    run = await world.get_run("again")
    assert run is not None and (run.status, run.steps_completed) == ("running", 1)


async def test_a_value_postgres_refuses_fails_only_its_write(opened: Any) -> None:
    """A correlation id with a NUL character: the statement fails on the server, nothing
    of it is stored, and the caller gets worldflow_apply's error, which names the NUL."""
    world, conn = opened
    [committer] = world._writers
    await _new_run(world, "nul")
    await world.append_events("nul", [EventRecord("nul", 1, RunStarted(), T0)])
    with pytest.raises(WorldError, match="NUL"):
        await world.append_events("nul", _pair("nul", 2, "bad\x00id"))
    assert await _counts(world, conn, "nul") == (2, 0, 0)
    assert committer.step_append_fallbacks == 1
    await world.append_events("nul", _pair("nul", 2, "1"))
    assert await _counts(world, conn, "nul") == (4, 1, 1)


async def test_version_6_keys_events_by_run_and_seq_and_keeps_them(own_db: str) -> None:
    """A version-5 database upgrades in place: its events stay, the bigserial id goes,
    (run, seq) is the primary key, and a duplicate seq is still refused."""
    conn = await asyncpg.connect(own_db)
    try:
        async with conn.transaction():
            await apply_migrations(conn, 5)
            for seq in range(3):
                await conn.execute(
                    "INSERT INTO workflow_events (workflow_run_id, seq, event_type, "
                    "payload, created_at) VALUES ('old', $1, 'x', '{}', now())", seq)
        assert f"5 -> {SCHEMA_VERSION}" in await postgres_setup(own_db)
        assert [r[0] for r in await conn.fetch(
            "SELECT seq FROM workflow_events WHERE workflow_run_id = 'old' ORDER BY seq")
                ] == [0, 1, 2]
        key = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'workflow_events'::regclass AND contype = 'p'")
        assert key == "PRIMARY KEY (workflow_run_id, seq)"
        columns = {r[0] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'workflow_events'")}
        assert "id" not in columns
        assert await conn.fetchval("SELECT to_regclass('workflow_runs_started')") is None
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO workflow_events (workflow_run_id, seq, event_type, payload, "
                "created_at) VALUES ('old', 2, 'x', '{}', now())")
    finally:
        await conn.close()
