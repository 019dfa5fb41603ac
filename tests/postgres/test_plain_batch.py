"""A batch of plain writes (created runs; appends of distinct runs with run and step ops
only) goes set-wise, through `worldflow_apply_plain`: it stores what `worldflow_apply`
stores write by write, and when a write of it is not plain after all (a run that
exists, a lost lease, a step with a row from an earlier attempt), nothing of the
set-wise attempt stays and every write gets its own outcome, as one by one."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import asyncpg
import msgspec
import pytest

from tests.postgres.test_step_append import stored
from worldflow import create_world, start, step, workflow
from worldflow.core.events import EventRecord, RunStarted, StepCompleted, StepStarted
from worldflow.core.records import NewRun
from worldflow.errors import LeaseLostError
from worldflow.worlds.batching import GroupCommitQueue
from worldflow.worlds.postgres import writer as writer_module

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _writes_sent_together_share_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writes each test sends together must make one batch: none of them is
    committed alone (the first of a burst would be, at low load: batching's "Alone")."""
    monkeypatch.setattr(GroupCommitQueue, "_alone", lambda self: False)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=1)
RAW = msgspec.Raw(b'{"args":[],"kwargs":{}}')


@step(name="pg_pb_add")
async def add(x: int, y: int) -> int:
    return x + y


@workflow(name="pg_pb_flow")
async def flow(x: int) -> int:
    x = await add(x, 1)
    return await add(x, 10)


def pg_world(url: str) -> Any:
    return create_world("postgres", connection_string=url, queue_concurrency=50,
                        job_prefix="pb" + uuid.uuid4().hex[:8])


async def _run_many(world: Any, n: int) -> list[str]:
    async def one(i: int) -> str:
        run = await start(flow, i, world=world, tags={"batch": "yes"})
        assert await run.result(timeout=30) == i + 11
        return str(run.run_id)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def test_runs_written_set_wise_store_what_written_one_by_one_store(
        own_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with pg_world(own_db) as world:
        [committer] = world._writers
        plain_ids = await _run_many(world, 12)
        assert committer.plain_batches > 0
        monkeypatch.setattr(writer_module, "plain_batch", lambda writes: False)
        sent = committer.plain_batches
        loop_ids = await _run_many(world, 12)
        assert committer.plain_batches == sent
        tagged = (await world.list_runs(tags={"batch": "yes"}, limit=100)).items
        assert len(tagged) == 24
        assert {(r.steps_total, r.steps_completed, r.status.value) for r in tagged} == {
            (2, 2, "completed")}
    conn = await asyncpg.connect(own_db)
    try:
        plain = [await stored(conn, run_id) for run_id in plain_ids]
        one_by_one = [await stored(conn, run_id) for run_id in loop_ids]
        jobs = await conn.fetchval("SELECT count(*) FROM workflow_jobs")
    finally:
        await conn.close()
    assert plain == one_by_one  # run i of each group: the same rows, ids and times aside
    assert plain[3]["run"] == ("completed", "14", 2, 2, 0, 0, True)
    assert [e[1] for e in plain[3]["events"]] == [
        "run_created", "run_started", "step_started", "step_completed", "step_started",
        "step_completed", "run_completed"]
    assert jobs == 0  # every ended run's job is gone


def _new(run_id: str) -> NewRun:
    return NewRun(run_id, "pg_pb_flow", RAW, T0)


async def _create(world: Any, *run_ids: str) -> list[Any]:
    return list(await asyncio.gather(
        *(world.create_run(_new(r), lease_owner=None, lease_seconds=30) for r in run_ids),
        return_exceptions=True))


async def test_a_run_that_exists_sends_the_batch_write_by_write(opened: Any) -> None:
    world, conn = opened
    [committer] = world._writers
    await _create(world, "old")
    outcomes = await _create(world, "new1", "old", "new2", "new3")
    assert committer.plain_batches == 1  # sent set-wise, taken one by one
    assert [created for _, created in outcomes] == [True, False, True, True]
    assert [record.run_id for record, _ in outcomes] == ["new1", "old", "new2", "new3"]
    assert await conn.fetchval("SELECT count(*) FROM workflow_runs") == 4
    assert await conn.fetchval(
        "SELECT count(*) FROM workflow_events WHERE workflow_run_id = 'old'") == 1


async def test_a_live_dedup_key_in_a_batch_returns_the_live_run(opened: Any) -> None:
    """A new run whose dedup key a live run holds: the set-wise insert meets the unique
    index, and one by one the write returns the live run, the others are created."""
    world, conn = opened
    [committer] = world._writers
    await world.create_run(msgspec.structs.replace(_new("live"), dedup_key="k"),
                           lease_owner=None, lease_seconds=30)
    sent = committer.plain_batches
    outcomes = await asyncio.gather(
        world.create_run(_new("n1"), lease_owner=None, lease_seconds=30),
        world.create_run(msgspec.structs.replace(_new("dup"), dedup_key="k"),
                         lease_owner=None, lease_seconds=30),
        *(world.create_run(_new(r), lease_owner=None, lease_seconds=30)
          for r in ("n2", "n3")))
    assert committer.plain_batches == sent + 1
    assert [(record.run_id, created) for record, created in outcomes] == [
        ("n1", True), ("live", False), ("n2", True), ("n3", True)]
    assert await conn.fetchval("SELECT count(*) FROM workflow_runs WHERE id = 'dup'") == 0
    assert await conn.fetchval("SELECT count(*) FROM workflow_runs") == 4


async def test_a_lost_lease_in_a_batch_fails_only_its_write(opened: Any) -> None:
    world, conn = opened
    await _create(world, "a", "b", "c", "d")
    results = await asyncio.gather(
        world.append_events("a", [EventRecord("a", 1, RunStarted(), T0)]),
        world.append_events("b", [EventRecord("b", 5, RunStarted(), T0)]),  # a gap
        world.append_events("c", [EventRecord("c", 1, RunStarted(), T0)]),
        world.append_events("d", [EventRecord("d", 1, RunStarted(), T0)]),
        return_exceptions=True)
    assert [type(r).__name__ for r in results] == [
        "NoneType", "LeaseLostError", "NoneType", "NoneType"]
    assert isinstance(results[1], LeaseLostError)
    rows = await conn.fetch("SELECT id, status FROM workflow_runs ORDER BY id")
    assert [tuple(r) for r in rows] == [("a", "running"), ("b", "pending"),
                                        ("c", "running"), ("d", "running")]
    assert await conn.fetchval(
        "SELECT count(*) FROM workflow_events WHERE workflow_run_id = 'b'") == 1


async def test_a_retried_step_in_a_batch_updates_its_row(opened: Any) -> None:
    """The step has a row from an attempt before a crash: the set-wise insert finds it,
    and one by one the retry's start and completion update it (attempt 2, completed)."""
    world, conn = opened
    [committer] = world._writers
    await _create(world, "r")
    await world.append_events("r", [
        EventRecord("r", 1, RunStarted(), T0),
        EventRecord("r", 2, StepStarted("1", "s", 1, msgspec.Raw(b"[1]")), T0)])
    sent = committer.plain_batches
    retry = world.append_events("r", [
        EventRecord("r", 3, StepStarted("1", "s", 2, msgspec.Raw(b"[1]")), T1),
        EventRecord("r", 4, StepCompleted("1", "s", 2, msgspec.Raw(b"7")), T1)])
    results = await asyncio.gather(retry, *[
        world.create_run(_new(f"x{i}"), lease_owner=None, lease_seconds=30)
        for i in range(3)])
    assert committer.plain_batches == sent + 1
    assert results[0] is None and all(created for _, created in results[1:])
    row = await conn.fetchrow(
        "SELECT status, attempt, output::text FROM workflow_steps WHERE id = 'r:1'")
    assert tuple(row) == ("completed", 2, "7")
    run = await world.get_run("r")
    assert (run.steps_total, run.steps_completed, run.steps_running) == (1, 1, 0)


async def test_a_batch_of_step_starts_and_completions_alone(opened: Any) -> None:
    """Under load a step's start may commit alone and its completion in a later batch:
    set-wise too, the start inserts the row running and the completion updates it."""
    world, conn = opened
    [committer] = world._writers
    runs = ["s1", "s2", "s3", "s4"]
    await _create(world, *runs)
    await asyncio.gather(*(world.append_events(r, [
        EventRecord(r, 1, RunStarted(), T0),
        EventRecord(r, 2, StepStarted("1", "s", 1, msgspec.Raw(b"[1]")), T0)])
        for r in runs))
    assert committer.plain_batches == 2
    counts = [await world.get_run(r) for r in runs]
    assert {(c.steps_total, c.steps_running) for c in counts} == {(1, 1)}
    await asyncio.gather(*(world.append_events(r, [
        EventRecord(r, 3, StepCompleted("1", "s", 1, msgspec.Raw(b"2")), T1)])
        for r in runs))
    assert committer.plain_batches == 3
    rows = await conn.fetch("SELECT status, attempt, output::text, completed_at "
                            "FROM workflow_steps ORDER BY id")
    assert [tuple(r) for r in rows] == [("completed", 1, "2", T1)] * 4


@pytest.mark.parametrize("others", [0, 3], ids=["write-by-write", "set-wise"])
async def test_parallel_steps_started_and_completed_in_one_batch(
        opened: Any, others: int) -> None:
    """Parallel steps: their starts are one append, their completions (in another order)
    a second; both in one batch, each step reads as completed with its own output and
    times, whether the batch goes write by write (`worldflow_apply`) or set-wise."""
    world, conn = opened
    [committer] = world._writers
    runs = ["r", *(f"o{i}" for i in range(others))]
    await _create(world, *runs)
    await world.append_events("r", [EventRecord("r", 1, RunStarted(), T0)])
    sent = committer.plain_batches
    await world.append_events("r", [
        EventRecord("r", 2, StepStarted("a", "s", 1, msgspec.Raw(b"[1]")), T0),
        EventRecord("r", 3, StepStarted("b", "s", 1, msgspec.Raw(b"[2]")), T0)], wait=False)
    await asyncio.gather(
        world.append_events("r", [
            EventRecord("r", 4, StepCompleted("b", "s", 1, msgspec.Raw(b"20")), T1),
            EventRecord("r", 5, StepCompleted("a", "s", 1, msgspec.Raw(b"10")), T1)]),
        *(world.append_events(o, [EventRecord(o, 1, RunStarted(), T0)]) for o in runs[1:]))
    assert committer.plain_batches == sent + (1 if others else 0)
    rows = await conn.fetch("SELECT correlation_id, status, output::text, started_at, "
                            "completed_at FROM workflow_steps ORDER BY position")
    assert [tuple(r) for r in rows] == [("a", "completed", "10", T0, T1),
                                        ("b", "completed", "20", T0, T1)]
    assert [(s.correlation_id, s.status, s.attempt) for s in await world.list_steps("r")
            ] == [("a", "completed", 1), ("b", "completed", 1)]
    assert [e.seq for e in await world.list_events("r")] == [0, 1, 2, 3, 4, 5]
