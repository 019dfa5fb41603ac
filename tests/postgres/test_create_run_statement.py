"""A run created alone and leased to its creator goes as one plain statement
(sql.CREATE_RUN) instead of worldflow_apply: the same rows; an existing run (by id or
live dedup key), an unleased run and a value Postgres refuses go through
worldflow_apply, which answers as before."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from worldflow.core.events import EventRecord, RunCompleted
from worldflow.core.records import NewRun, RunStatus
from worldflow.errors import WorldError
from worldflow.worlds.postgres import writer as writer_module

if TYPE_CHECKING:
    import asyncpg

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
INPUT = msgspec.Raw(b'{"args":[1],"kwargs":{}}')


async def stored(conn: asyncpg.Connection, run_id: str) -> dict[str, Any]:
    """What a create left in the database, with the run's id left out."""
    run = await conn.fetchrow(
        "SELECT workflow_name, status, input::text, created_at, updated_at, started_at, "
        "queue, dedup_key, parent_run_id, tags::text FROM workflow_runs WHERE id = $1",
        run_id)
    events = await conn.fetch(
        "SELECT seq, event_type, correlation_id, payload::text, created_at "
        "FROM workflow_events WHERE workflow_run_id = $1 ORDER BY seq", run_id)
    tags = await conn.fetch("SELECT key, value, created_at FROM workflow_run_tags "
                            "WHERE workflow_run_id = $1 ORDER BY key", run_id)
    job = await conn.fetchrow(
        "SELECT queue, workflow_name, lease_owner, lease_expires_at IS NOT NULL "
        "FROM workflow_jobs WHERE run_id = $1", run_id)
    return {"run": tuple(run), "events": [tuple(e) for e in events],
            "tags": [tuple(t) for t in tags], "job": tuple(job)}


@pytest.mark.parametrize("started", [False, True])
async def test_a_lone_leased_create_stores_what_worldflow_apply_stores(
        opened: Any, monkeypatch: pytest.MonkeyPatch, started: bool) -> None:
    world, conn = opened
    [committer] = world._writers

    def new(run_id: str) -> NewRun:
        return NewRun(run_id, "cs_flow", INPUT, T0, dedup_key=run_id + "-key",
                      tags={"customer": "42", "plan": "pro"}, started=started)

    fast, created = await world.create_run(new("fast"), lease_owner="me", lease_seconds=30)
    assert created and (committer.lone_creates, committer.lone_create_fallbacks) == (1, 0)
    monkeypatch.setattr(writer_module, "create_run_args", lambda write: None)
    _, created = await world.create_run(new("slow"), lease_owner="me", lease_seconds=30)
    assert created and committer.lone_creates == 1
    ours, theirs = await stored(conn, "fast"), await stored(conn, "slow")
    assert ours["run"][7] == "fast-key" and theirs["run"][7] == "slow-key"
    assert {**ours, "run": ours["run"][:7] + ours["run"][8:]} == \
        {**theirs, "run": theirs["run"][:7] + theirs["run"][8:]}
    status = RunStatus.RUNNING if started else RunStatus.PENDING
    assert ours["run"][1] == status.value and fast.status == status
    assert [e[1] for e in ours["events"]] == (
        ["run_created", "run_started"] if started else ["run_created"])
    assert ours["tags"] == [("customer", "42", T0), ("plan", "pro", T0)]
    assert ours["job"] == ("default", "cs_flow", "me", True)
    assert await world.claim_runs("other", 10, 30.0) == []  # leased to its creator


async def test_an_existing_run_is_returned_not_created_again(opened: Any) -> None:
    """The same id, or a live run's dedup key: the statement creates nothing and
    worldflow_apply returns the run there; once that run has ended, its key is free
    and the statement creates the next run."""
    world, conn = opened
    [committer] = world._writers
    await world.create_run(NewRun("one", "cs_flow", INPUT, T0, dedup_key="k"),
                           lease_owner="me", lease_seconds=30)
    again, created = await world.create_run(NewRun("one", "cs_flow", INPUT, T0),
                                            lease_owner="me", lease_seconds=30)
    assert not created and again.run_id == "one"
    same_key, created = await world.create_run(
        NewRun("two", "cs_flow", INPUT, T0, dedup_key="k"), lease_owner="me",
        lease_seconds=30)
    assert not created and same_key.run_id == "one"
    assert (committer.lone_creates, committer.lone_create_fallbacks) == (3, 2)
    assert await conn.fetchval("SELECT count(*) FROM workflow_runs") == 1
    await world.append_events("one", [EventRecord("one", 1, RunCompleted(INPUT), T0)])
    later, created = await world.create_run(
        NewRun("three", "cs_flow", INPUT, T0, dedup_key="k"), lease_owner="me",
        lease_seconds=30)
    assert created and later.run_id == "three"
    assert (committer.lone_creates, committer.lone_create_fallbacks) == (4, 2)


async def test_an_unleased_create_goes_through_worldflow_apply(opened: Any) -> None:
    """A run for any worker: worldflow_apply creates it and wakes the workers."""
    world, _ = opened
    [committer] = world._writers
    _, created = await world.create_run(NewRun("free", "cs_flow", INPUT, T0),
                                        lease_owner=None, lease_seconds=30)
    assert created and committer.lone_creates == 0
    assert await world.claim_runs("worker", 10, 30.0) == ["free"]


async def test_a_value_postgres_refuses_fails_only_its_create(opened: Any) -> None:
    """A NUL character in the workflow name: the statement fails on the server, nothing
    of it is stored, and worldflow_apply's error names the NUL."""
    world, conn = opened
    [committer] = world._writers
    with pytest.raises(WorldError, match="NUL"):
        await world.create_run(NewRun("nul", "bad\x00name", INPUT, T0), lease_owner="me",
                               lease_seconds=30)
    assert committer.lone_create_fallbacks == 1
    assert await conn.fetchval("SELECT count(*) FROM workflow_runs") == 0
    assert await conn.fetchval("SELECT count(*) FROM workflow_events") == 0
