"""Postgres backends killed under load: every connection of the world dies, repeatedly.

100 runs of a few steps are started on, and go through, a started Postgres world in a
database of this test's own, while a separate admin connection calls
`pg_terminate_backend` on every backend of that database (the group-commit writer, the
pool's connections, the LISTEN connection) every 0.3-0.5 s, from the first start until
every run has ended. The world must reconnect each of them and carry on.

Asserted: every run completes with the right result; each step's completion is recorded
once (one `step_completed` per correlation id); a step whose completion was committed is
never run again (a body that sees its own step id among the committed ones is counted).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from typing import Any

import asyncpg
import pytest

from worldflow import create_world, get_step_metadata, start, step, workflow
from worldflow.core.records import step_id_for

pytestmark = pytest.mark.slow

RUNS = 100
KILL_SECONDS = 20.0  # the most; the kills stop once every run has ended

body_runs: collections.Counter[str] = collections.Counter()  # step id -> executions
committed: set[str] = set()  # step ids whose step_completed is stored
reruns_after_commit: list[str] = []


@step(name="ck_work", max_retries=10, backoff="20ms")
async def work(run_no: int, i: int) -> int:
    step_id = get_step_metadata().step_id
    body_runs[step_id] += 1
    if step_id in committed:
        reruns_after_commit.append(step_id)
    await asyncio.sleep(0.25)  # 100 runs at 20 at once: the load lasts a few seconds
    return run_no * 10 + i


@workflow(name="ck_flow")
async def ck_flow(run_no: int) -> int:
    first = await work(run_no, 0)
    pair = await asyncio.gather(work(run_no, 1), work(run_no, 2))
    last = await work(run_no, 3)
    return first + sum(pair) + last


def expected(run_no: int) -> int:
    return 4 * run_no * 10 + 6


def record_commits(world: Any) -> None:
    """Note each step_completed once its append has returned (i.e. is committed)."""
    original = world.append_events

    async def recording(run_id: str, records: Any, **kwargs: Any) -> Any:
        result = await original(run_id, records, **kwargs)
        if kwargs.get("wait", True):
            committed.update(step_id_for(run_id, r.correlation_id) for r in records
                             if r.event_type == "step_completed")
        return result

    world.append_events = recording


async def kill_backends(admin: asyncpg.Connection, dbname: str, seconds: float,
                        rng: random.Random, done: asyncio.Future[None]) -> tuple[int, int]:
    """Terminate every backend of `dbname` (only that database) every 0.3-0.5 s until
    `done`; return (backends terminated, rounds)."""
    killed = rounds = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end and not done.done():
        rounds += 1
        await asyncio.sleep(rng.uniform(0.3, 0.5))
        killed += await admin.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()) AS t", dbname)
    return killed, rounds


async def test_killed_backends_lose_no_run_and_rerun_no_committed_step(
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from tests.postgres.test_processes import drop_db, fresh_db

    caplog.set_level(logging.CRITICAL, logger="worldflow")
    url = await fresh_db(postgres_url)
    dbname = url.rsplit("/", 1)[1]
    base = url.rsplit("/", 1)[0]
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        world = create_world("postgres", connection_string=url, job_prefix="kills",
                             queue_concurrency=20)
        async with world:
            world.engine.crash_retry_delay = 0.05
            record_commits(world)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            killer = asyncio.ensure_future(
                kill_backends(admin, dbname, KILL_SECONDS, random.Random(7), done))
            runs = []
            for n in range(RUNS):  # started while the kills go on: creation is covered
                runs.append(await start(ck_flow, n, world=world))
                await asyncio.sleep(0.01)
            try:
                results = await asyncio.gather(*(r.result(timeout=120) for r in runs))
            finally:
                done.set_result(None)
                killed, rounds = await killer
            assert results == [expected(n) for n in range(RUNS)]
            assert rounds >= 5 and killed > 0  # the kills went on while runs were live
            for run in runs:
                events = await world.list_events(run.run_id)
                assert [e.seq for e in events] == list(range(len(events)))
                completions = collections.Counter(
                    e.correlation_id for e in events if e.event_type == "step_completed")
                assert len(completions) == 4, (run.run_id, completions)
                assert set(completions.values()) == {1}, (run.run_id, completions)
        assert reruns_after_commit == []
        print(f"\nbackend kills: {killed} backends terminated in {rounds} rounds; "
              f"{sum(body_runs.values())} step bodies run for {4 * RUNS} steps, "
              f"{sum(1 for n in body_runs.values() if n > 1)} steps run more than once")
    finally:
        await admin.close()
        await drop_db(url)
        body_runs.clear()
        committed.clear()
        reruns_after_commit.clear()

