"""Two worker processes share one world (a fresh Postgres database, or one SQLite file)
and one schedule that ticks every two seconds: each tick starts exactly one run, and its
step runs once."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest

from tests.e2e.schedule_app import tick
from worldflow import create_schedule, create_world, pause_schedule
from worldflow.core.schedules import scheduled_at_of

if TYPE_CHECKING:
    from worldflow.worlds import World

APP = Path(__file__).with_name("schedule_app.py")
ROOT = Path(__file__).resolve().parents[2]
TICKS_WANTED = 5


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _spawn(marker: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(APP), str(marker)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "READY", proc.stderr.read() if proc.stderr else line
    return proc


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    return err


async def _runs(world: World, schedule_id: str) -> dict[str, str]:
    page = await world.list_runs(workflow_name="sp_tick", limit=1000)
    return {r.run_id: r.status.value for r in page.items
            if r.run_id.startswith(schedule_id + "@")}


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_two_workers_start_each_tick_once_and_run_its_step_once(
        request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    marker = tmp_path / "marks.txt"
    marker.touch()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}
    base = name = ""
    if backend == "postgres":
        base = request.getfixturevalue("postgres_url").rsplit("/", 1)[0]
        name = f"wf_sched_{uuid.uuid4().hex[:8]}"
        await _admin(f"{base}/postgres", f'CREATE DATABASE "{name}"')
        env.update(WORKFLOW_TARGET_WORLD="postgres", WORKFLOW_POSTGRES_URL=f"{base}/{name}")
        world = create_world("postgres", connection_string=f"{base}/{name}")
    else:
        path = str(tmp_path / "shared.db")
        env.update(WORKFLOW_TARGET_WORLD="sqlite", WORKFLOW_SQLITE_PATH=path)
        world = create_world("sqlite", path=path)
    await world.open()  # storage only: this process runs no scheduler
    workers: list[subprocess.Popen[str]] = []
    errors: list[str] = []
    try:
        await create_schedule(tick, cron="*/2 * * * * *", schedule_id="every2s",
                              catchup="all", world=world)
        workers = [_spawn(marker, env) for _ in range(2)]
        deadline = time.monotonic() + 60
        while len(await _runs(world, "every2s")) < TICKS_WANTED:
            assert time.monotonic() < deadline, "the schedule started too few runs"
            assert all(w.poll() is None for w in workers)
            await asyncio.sleep(0.2)
        await pause_schedule("every2s", world=world)
        await asyncio.sleep(0.5)  # a tick being started as it was paused lands now
        while set((runs := await _runs(world, "every2s")).values()) != {"completed"}:
            assert time.monotonic() < deadline, runs
            await asyncio.sleep(0.2)
    finally:
        errors = [_stop(w) for w in workers]
        await world.close()
        if name:
            await _admin(f"{base}/postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for err in errors:
        assert "Traceback" not in err, err
    ticks = sorted(scheduled_at_of(run_id) for run_id in runs)  # type: ignore[type-var]
    assert len(ticks) >= TICKS_WANTED
    # every tick from the first to the last, two seconds apart: none skipped
    assert all(b - a == dt.timedelta(seconds=2) for a, b in itertools.pairwise(ticks))
    assert all(t is not None and t.second % 2 == 0 for t in ticks)
    marks = [line.split() for line in marker.read_text().splitlines()]
    per_run = collections.Counter(m[0] for m in marks)
    assert set(per_run) == set(runs)
    assert set(per_run.values()) == {1}, per_run  # each tick's step ran once
    for run_id, at, _pid in marks:
        assert dt.datetime.fromisoformat(at) == scheduled_at_of(run_id)
    print(f"{len(runs)} ticks; steps run by workers {collections.Counter(m[2] for m in marks)}")
