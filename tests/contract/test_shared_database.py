"""Two processes on one database (a SQLite file, a Postgres database): which process
takes which run, and how soon one process learns of a run the other one ended."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from msgspec import Raw

from worldflow import create_world, start, step, workflow
from worldflow.core.records import NewRun

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ROOT = Path(__file__).resolve().parents[2]


@step(name="shared_double")
async def double(i: int) -> int:
    return 2 * i


@workflow(name="shared_flow")
async def shared_flow(i: int) -> int:
    return await double(i)


@pytest.fixture(params=["sqlite", "postgres"])
async def shared(request: pytest.FixtureRequest,
                 tmp_path: Path) -> AsyncIterator[tuple[Any, dict[str, str]]]:
    """A world of this process (opened, no engine yet) and the environment that gives a
    second process the same database."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING",
           "WORKFLOW_TARGET_WORLD": request.param}
    if request.param == "sqlite":
        path = str(tmp_path / "shared.db")
        env["WORKFLOW_SQLITE_PATH"] = path
        world = create_world("sqlite", path=path, queue_concurrency=20)
    else:
        url = request.getfixturevalue("postgres_url")
        prefix = "s" + uuid.uuid4().hex[:10]
        env |= {"WORKFLOW_POSTGRES_URL": url, "WORKFLOW_POSTGRES_JOB_PREFIX": prefix}
        world = create_world("postgres", connection_string=url, job_prefix=prefix,
                             queue_concurrency=20)
    await world.open()
    try:
        yield world, env
    finally:
        await world.close()


def popen(mode: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.contract.shared_worker", mode],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


async def spawn(mode: str, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = popen(mode, env)
    assert proc.stdout is not None
    line = await anyio.to_thread.run_sync(proc.stdout.readline)
    if line.strip() != "READY":
        stop(proc)
        pytest.fail(f"the second process did not start: {line!r}")
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    if err.strip():  # shown by pytest when the test fails
        print(f"--- second process stderr ---\n{err[-5000:]}")


async def test_runs_go_only_to_workers_that_have_their_workflow(
        shared: tuple[Any, dict[str, str]]) -> None:
    world, env = shared
    lacking = await spawn("lacking", env)
    try:
        runs = [await start(shared_flow, i, world=world) for i in range(10)]
        # the other worker polls at least once a second (Postgres also notifies it at
        # once): give it every chance to take the runs whose code it does not have
        await asyncio.sleep(1.5)
        began = time.monotonic()
        await world.start()
        results = await asyncio.gather(*(run.result(timeout=20) for run in runs))
        took = time.monotonic() - began
    finally:
        stop(lacking)
    assert results == [2 * i for i in range(10)]
    assert took < 5, f"runs waited {took:.1f}s (taken by the worker without their code)"


async def test_a_run_ended_by_another_process_wakes_its_waiters_at_once(
        shared: tuple[Any, dict[str, str]]) -> None:
    world, env = shared
    naps = [0.3, 0.45, 0.6, 0.75, 0.9]
    run_ids = []
    for seconds in naps:
        run_id = f"watch-{uuid.uuid4().hex[:10]}"
        run_input = Raw(b'{"args":[%s],"kwargs":{}}' % str(seconds).encode())
        await world.create_run(NewRun(run_id, "watch_flow", run_input, world.now()),
                               lease_owner=None, lease_seconds=30.0)
        run_ids.append(run_id)

    async def wait_end(run_id: str) -> float:
        run = await world.wait_run_finished(run_id, timeout=30)
        assert run.completed_at is not None and run.status == "completed"
        return time.time() - run.completed_at.timestamp()

    # this process has no engine: the other one runs every run
    waiters = [asyncio.create_task(wait_end(run_id)) for run_id in run_ids]
    worker = await spawn("watch", env)
    try:
        latencies = await asyncio.gather(*waiters)
    finally:
        stop(worker)
    # one watcher for all waiters (SQLite: PRAGMA data_version every 25 ms; Postgres:
    # NOTIFY); polling each run once a second would be late by 0.5 s on average
    assert sorted(latencies)[len(latencies) // 2] < 0.1, latencies
    assert max(latencies) < 0.25, latencies
