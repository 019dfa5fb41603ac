"""Schema version 7: workflow_steps is a view over the step events. A version-6 database
upgrades in place, and the view shows each step as the version-6 table held it; values
with an escaped NUL read back byte for byte; a run's step counts agree with the view."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import msgspec
import pytest

from worldflow.cli.postgres_setup import postgres_setup
from worldflow.core.events import (
    ErrorInfo,
    Event,
    EventRecord,
    RunCompleted,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
    encode_event,
)
from worldflow.worlds.batching import GroupCommitQueue
from worldflow.worlds.postgres import writer as writer_module
from worldflow.worlds.postgres.schema import SCHEMA_VERSION, apply_migrations
from worldflow.worlds.postgres.writer import PLAIN_MIN

T = [dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i) for i in range(20)]
NUL_VALUE = b'{"text":"a\\u0000b","back":"c\\\\u0000d"}'  # a NUL, and a backslash-u text
ERROR = ErrorInfo("ValueError", "no", fatal=False)

#: one run's events (each at T[seq]): every way a step's events can go
EVENTS: list[Event] = [
    RunStarted(),
    StepStarted("1", "once", 1, msgspec.Raw(b"[1]")),         # 1: completed at once
    StepCompleted("1", "once", 1, msgspec.Raw(b"10")),
    StepStarted("2", "flaky", 1, msgspec.Raw(b"[2]")),        # 2: retried, completed
    StepRetrying("2", "flaky", 1, ERROR, T[5]),
    StepStarted("2", "flaky", 2, msgspec.Raw(b"[2]")),
    StepCompleted("2", "flaky", 2, msgspec.Raw(b"20")),
    StepStarted("3", "broken", 1, msgspec.Raw(b"[3]")),       # 3: retried, failed
    StepRetrying("3", "broken", 1, ERROR, T[9]),
    StepStarted("3", "broken", 2, msgspec.Raw(b"[3]")),
    StepFailed("3", "broken", 2, ERROR),
    StepStarted("4", "slow", 1, msgspec.Raw(b"[4]")),         # 4: running
    StepStarted("5", "waiting", 1, msgspec.Raw(b"[5]")),      # 5: waits for its retry
    StepRetrying("5", "waiting", 1, ERROR, T[19]),
    StepStarted("6", "nul", 1, msgspec.Raw(NUL_VALUE)),       # 6: NULs in and out
    StepCompleted("6", "nul", 1, msgspec.Raw(NUL_VALUE)),
    StepStarted("7", "crashed", 1),                           # 7: its worker died; again
    StepStarted("7", "crashed", 1),
    StepCompleted("7", "crashed", 1, msgspec.Raw(b"70")),
]
ERROR_JSON = msgspec.json.encode(ERROR).decode()
# the rows version 6's worldflow_apply kept for them, in order
ROWS = [
    ("r:1", "1", "once", "completed", 1, "[1]", "10", None, T[2], T[3]),
    ("r:2", "2", "flaky", "completed", 2, "[2]", "20", None, T[4], T[7]),
    ("r:3", "3", "broken", "failed", 2, "[3]", None, ERROR_JSON, T[8], T[11]),
    ("r:4", "4", "slow", "running", 1, "[4]", None, None, T[12], None),
    ("r:5", "5", "waiting", "pending", 1, "[5]", None, ERROR_JSON, T[13], None),
    ("r:6", "6", "nul", "completed", 1, NUL_VALUE.decode(), NUL_VALUE.decode(), None, T[15],
     T[16]),
    ("r:7", "7", "crashed", "completed", 1, "null", "70", None, T[17], T[19]),
]
SELECT_STEPS = ("SELECT id, correlation_id, step_name, status, attempt, input::text, "
                "output::text, error::text, started_at, completed_at FROM workflow_steps "
                "WHERE workflow_run_id = 'r' ORDER BY position")


async def _insert_events(conn: asyncpg.Connection, run_id: str = "r",
                         events: list[Event] = EVENTS) -> None:
    await conn.execute(
        "INSERT INTO workflow_events (workflow_run_id, seq, event_type, payload, "
        "created_at) VALUES ($1, 0, 'run_created', '{}', $2)", run_id, T[0])
    for seq, event in enumerate(events, start=1):
        await conn.execute(
            "INSERT INTO workflow_events (workflow_run_id, seq, event_type, correlation_id, "
            "payload, created_at) VALUES ($1, $2, $3, $4, $5::json, $6)", run_id, seq,
            type(event).__struct_config__.tag, getattr(event, "correlation_id", None),
            encode_event(event).decode(), T[seq])


async def test_a_version_6_database_reads_its_steps_as_its_table_held_them(
        own_db: str) -> None:
    conn = await asyncpg.connect(own_db)
    try:
        async with conn.transaction():
            await apply_migrations(conn, 6)
            await conn.execute(
                "INSERT INTO workflow_runs (id, workflow_name, status, input, created_at, "
                "updated_at) VALUES ('r', 'wf', 'running', '{}', $1, $1)", T[0])
            await _insert_events(conn)
            for row in ROWS:
                await conn.execute(
                    "INSERT INTO workflow_steps (id, workflow_run_id, correlation_id, "
                    "step_name, status, attempt, input, output, error, started_at, "
                    "completed_at) VALUES ($1, 'r', $2, $3, $4, $5, $6::json, $7::json, "
                    "$8::json, $9, $10)", *row)
        assert [tuple(r) for r in await conn.fetch(SELECT_STEPS)] == ROWS  # the table
        assert f"6 -> {SCHEMA_VERSION}" in await postgres_setup(own_db)
        assert await conn.fetchval(
            "SELECT table_type FROM information_schema.tables "
            "WHERE table_name = 'workflow_steps'") == "VIEW"
        assert [tuple(r) for r in await conn.fetch(SELECT_STEPS)] == ROWS  # the view
        # a run's counts, as a live run's are read: by its latest step events
        counts = await conn.fetchval(
            "SELECT ARRAY[count(*), count(*) FILTER (WHERE status = 'completed'), "
            "count(*) FILTER (WHERE status = 'failed'), "
            "count(*) FILTER (WHERE status = 'running')] "
            "FROM workflow_steps WHERE workflow_run_id = 'r'")
        assert counts == [7, 4, 1, 1]
    finally:
        await conn.close()


async def test_the_world_reads_the_steps_and_counts_from_the_events(opened: Any) -> None:
    """On a version-7 database, through the world: list_steps as the view, and the
    live run's counts from the same events."""
    world, conn = opened
    await conn.execute(
        "INSERT INTO workflow_runs (id, workflow_name, status, input, created_at, "
        "updated_at) VALUES ('r', 'wf', 'running', '{}', $1, $1)", T[0])
    await _insert_events(conn)
    steps = await world.list_steps("r")
    assert [(s.step_id, s.correlation_id, s.step_name, s.status.value, s.attempt,
             None if s.input is None else bytes(s.input).decode(),
             None if s.output is None else bytes(s.output).decode(),
             None if s.error is None else msgspec.json.encode(s.error).decode(),
             s.started_at, s.completed_at) for s in steps] == ROWS
    run = await world.get_run("r")
    assert (run.steps_total, run.steps_completed, run.steps_failed,
            run.steps_running) == (7, 4, 1, 1)


@pytest.mark.parametrize("field", ["input", "output"])
async def test_a_nul_value_reads_back_byte_for_byte(opened: Any, field: str) -> None:
    _, conn = opened
    await conn.execute(
        "INSERT INTO workflow_runs (id, workflow_name, status, input, created_at, "
        "updated_at) VALUES ('r', 'wf', 'running', '{}', $1, $1)", T[0])
    await _insert_events(conn)
    value = await conn.fetchval(f"SELECT {field}::text FROM workflow_steps "
                                "WHERE id = 'r:6'")
    assert value == NUL_VALUE.decode()


async def _new_run(conn: asyncpg.Connection, run_id: str, events: list[Event]) -> None:
    await conn.execute(
        "INSERT INTO workflow_runs (id, workflow_name, status, input, created_at, "
        "updated_at) VALUES ($1, 'wf', 'running', '{}', $2, $2)", run_id, T[0])
    await _insert_events(conn, run_id, events)


@pytest.mark.parametrize("path", ["alone", "worldflow_apply", "set-wise"])
async def test_a_run_ends_with_its_step_counts_from_its_events(
        opened: Any, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The counts stored at a run's end, by each way an end is written (the lone
    statement, worldflow_apply write by write, worldflow_apply_plain set-wise): every
    kind of step counted by its latest event, and a step whose attempt was cut short
    and done again counted once."""
    world, conn = opened
    [committer] = world._writers
    if path == "worldflow_apply":
        monkeypatch.setattr(writer_module, "run_end_args", lambda write, channel: None)
    if path == "set-wise":
        monkeypatch.setattr(GroupCommitQueue, "_alone", lambda self: False)
    runs = [f"end{i}" for i in range(PLAIN_MIN if path == "set-wise" else 1)]
    crashed = [RunStarted(), StepStarted("1", "s", 1, msgspec.Raw(b"[1]")),
               StepStarted("1", "s", 1, msgspec.Raw(b"[1]"))]
    for run_id in runs:
        await _new_run(conn, run_id, EVENTS)
    await _new_run(conn, "again", crashed)
    sent = committer.plain_batches
    await asyncio.gather(*(world.append_events(run_id, [
        EventRecord(run_id, len(EVENTS) + 1, RunCompleted(msgspec.Raw(b"1")), T[19])])
        for run_id in runs))
    # the crashed step's third start and its completion, with the end (after a step)
    await world.append_events("again", [
        EventRecord("again", 4, StepStarted("1", "s", 1, msgspec.Raw(b"[1]")), T[4]),
        EventRecord("again", 5, StepCompleted("1", "s", 1, msgspec.Raw(b"2")), T[5]),
        EventRecord("again", 6, RunCompleted(msgspec.Raw(b"2")), T[6])])
    assert committer.plain_batches == sent + (1 if path == "set-wise" else 0)
    for run_id in runs:
        run = await world.get_run(run_id)
        assert run.status == "completed"
        assert (run.steps_total, run.steps_completed, run.steps_failed,
                run.steps_running) == (7, 4, 1, 1)
    run = await world.get_run("again")
    assert (run.status, run.steps_total, run.steps_completed, run.steps_running) == (
        "completed", 1, 1, 0)
    stored = await conn.fetch("SELECT steps_total, steps_completed, steps_failed, "
                              "steps_running FROM workflow_runs WHERE id = ANY($1)",
                              [*runs, "again"])
    assert sorted(tuple(r) for r in stored) == sorted(
        [(7, 4, 1, 1)] * len(runs) + [(1, 1, 0, 0)])
