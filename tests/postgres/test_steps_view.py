"""Schema version 7: workflow_steps is a view over the step events. A version-6 database
upgrades in place, and the view shows each step as the version-6 table held it; values
with an escaped NUL read back byte for byte; a run's step counts agree with the view."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from typing import Any

import asyncpg
import msgspec
import pytest

from worldflow.cli.postgres_setup import postgres_setup
from worldflow.core.events import (
    ErrorInfo,
    Event,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
    encode_event,
)
from worldflow.worlds.postgres.schema import MIGRATIONS, SCHEMA_VERSION

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


def _sql(name: str) -> str:
    return resources.files("worldflow.worlds.postgres").joinpath(name).read_text()


async def _insert_events(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO workflow_events (workflow_run_id, seq, event_type, payload, "
        "created_at) VALUES ('r', 0, 'run_created', '{}', $1)", T[0])
    for seq, event in enumerate(EVENTS, start=1):
        await conn.execute(
            "INSERT INTO workflow_events (workflow_run_id, seq, event_type, correlation_id, "
            "payload, created_at) VALUES ('r', $1, $2, $3, $4::json, $5)", seq,
            type(event).__struct_config__.tag, getattr(event, "correlation_id", None),
            encode_event(event).decode(), T[seq])


async def test_a_version_6_database_reads_its_steps_as_its_table_held_them(
        own_db: str) -> None:
    conn = await asyncpg.connect(own_db)
    try:
        async with conn.transaction():
            await conn.execute("CREATE TABLE worldflow_schema_version (version integer NOT "
                               "NULL, applied_at timestamptz NOT NULL DEFAULT now())")
            for version in range(1, 7):
                await conn.execute(_sql(MIGRATIONS[version]))
                await conn.execute(
                    "INSERT INTO worldflow_schema_version (version) VALUES ($1)", version)
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
