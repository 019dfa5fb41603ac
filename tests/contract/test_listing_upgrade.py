"""A version 3 database (no tags, no step counters) upgrades to version 4: existing runs'
counters are backfilled from their steps, the triggers keep them from then on, and
tags work for new runs. On SQLite and on Postgres."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import asyncpg
from msgspec import Raw

from worldflow import create_world
from worldflow.core.events import EventRecord, StepCompleted, StepStarted
from worldflow.core.records import NewRun

if TYPE_CHECKING:
    from pathlib import Path

# (step id, status) of the old run's steps
OLD_STEPS = (("c1", "completed"), ("c2", "completed"), ("c3", "failed"), ("c4", "running"),
             ("c5", "pending"))
AT = "2026-01-01T00:00:00.000000+00:00"


#: the step events of each status
_EVENTS_OF = {"completed": ("step_started", "step_completed"),
              "failed": ("step_started", "step_failed"), "running": ("step_started",),
              "pending": ("step_started", "step_retrying")}


def _step_events(steps: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    return [(type_, cid) for cid, status in steps for type_ in _EVENTS_OF[status]]


def _step_payload(event_type: str, cid: str) -> str:
    extra = {"step_completed": ',"output":1',
             "step_failed": ',"error":{"type":"E","message":"no"}',
             "step_retrying": ',"error":{"type":"E","message":"no"},'
                              '"retry_at":"2026-01-01T00:00:01Z"'}.get(event_type, "")
    return (f'{{"type":"{event_type}","correlation_id":"{cid}","step_name":"s",'
            f'"attempt":1{extra}}}')


async def check_upgraded(world: Any) -> None:
    old = await world.get_run("old")
    assert (old.steps_total, old.steps_completed, old.steps_failed,
            old.steps_running) == (5, 2, 1, 1)
    assert old.tags == {}
    bare = await world.get_run("bare")
    assert (bare.steps_total, bare.steps_completed) == (0, 0)
    # from now on the triggers count: c4 completes, c6 is new
    seq = len(await world.list_events("old"))
    await world.append_events("old", [
        EventRecord("old", seq, StepCompleted("c4", "s", 1, Raw(b"1")), world.now()),
        EventRecord("old", seq + 1, StepStarted("c6", "s", 1), world.now())])
    old = await world.get_run("old")
    assert (old.steps_total, old.steps_completed, old.steps_failed,
            old.steps_running) == (6, 3, 1, 1)
    await world.create_run(NewRun("new", "wf", Raw(b"{}"), world.now(),
                                  tags={"customer": "42"}),
                           lease_owner=None, lease_seconds=30.0)
    page = await world.list_runs(tags={"customer": "42"})
    assert [r.run_id for r in page.items] == ["new"]
    assert [r.run_id for r in (await world.list_runs()).items] == ["new", "old", "bare"]


async def test_a_version_3_sqlite_database_is_upgraded_with_counts(tmp_path: Path) -> None:
    from worldflow.worlds.sqlite.schema import SCHEMA_VERSION, _statements

    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path)
    for filename in ("0001_initial.sql", "0002_claims_and_hook_metadata.sql",
                     "0003_child_runs.sql"):
        for statement in _statements(filename):
            conn.execute(statement)
    conn.execute("INSERT INTO worldflow_schema (version) VALUES (3)")
    for run_id in ("old", "bare"):
        conn.execute("INSERT INTO workflow_runs (id, workflow_name, status, input, created_at, "
                     "updated_at) VALUES (?, 'wf', 'running', '{}', ?, ?)", (run_id, AT, AT))
        conn.execute("INSERT INTO workflow_events (workflow_run_id, seq, event_type, payload, "
                     "created_at) VALUES (?, 0, 'run_created', ?, ?)",
                     (run_id, '{"type":"run_created","workflow_name":"wf","input":{}}', AT))
    for cid, status in OLD_STEPS:
        conn.execute("INSERT INTO workflow_steps (id, workflow_run_id, correlation_id, "
                     "step_name, status, attempt) VALUES (?, 'old', ?, 's', ?, 1)",
                     (f"old:{cid}", cid, status))
    conn.commit()
    conn.close()
    world = create_world("sqlite", path=str(path))
    await world.open()
    try:
        await check_upgraded(world)
    finally:
        await world.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM worldflow_schema").fetchall() \
            == [(SCHEMA_VERSION,)]
    finally:
        conn.close()


async def test_a_version_3_postgres_database_is_upgraded_with_counts(
        postgres_url: str) -> None:
    from tests.postgres.test_processes import drop_db, fresh_db
    from worldflow.worlds.postgres.schema import SCHEMA_VERSION, apply_migrations

    url = await fresh_db(postgres_url)
    try:
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await apply_migrations(conn, 3)
                for run_id in ("old", "bare"):
                    await conn.execute(
                        "INSERT INTO workflow_runs (id, workflow_name, status, input, "
                        "created_at, updated_at) VALUES ($1, 'wf', 'running', '{}', "
                        "'2026-01-01', '2026-01-01')", run_id)
                    await conn.execute(
                        "INSERT INTO workflow_events (workflow_run_id, seq, event_type, "
                        "payload, created_at) VALUES ($1, 0, 'run_created', "
                        "'{\"type\":\"run_created\",\"workflow_name\":\"wf\",\"input\":{}}', "
                        "'2026-01-01')", run_id)
                for cid, status in OLD_STEPS:
                    await conn.execute(
                        "INSERT INTO workflow_steps (id, workflow_run_id, correlation_id, "
                        "step_name, status, attempt) VALUES ($1, 'old', $2, 's', $3, 1)",
                        f"old:{cid}", cid, status)
                # and the events they were made from (from version 7, the steps are read
                # from them)
                seq = 1
                for event_type in _step_events(OLD_STEPS):
                    type_, cid = event_type
                    await conn.execute(
                        "INSERT INTO workflow_events (workflow_run_id, seq, event_type, "
                        "correlation_id, payload, created_at) VALUES ('old', $1, $2, $3, "
                        "$4::json, '2026-01-01')", seq, type_, cid, _step_payload(type_, cid))
                    seq += 1
        finally:
            await conn.close()
        world = create_world("postgres", connection_string=url, job_prefix="up")
        await world.open()
        try:
            await check_upgraded(world)
        finally:
            await world.close()
        conn = await asyncpg.connect(url)
        try:
            versions = await conn.fetch("SELECT version FROM worldflow_schema_version "
                                        "ORDER BY version")
            assert [r[0] for r in versions] == list(range(1, SCHEMA_VERSION + 1))
        finally:
            await conn.close()
    finally:
        await drop_db(url)
