"""Crash recovery on the SQLite world: a real worker process, a real SIGKILL mid-run,
then a new process on the same file.

The worker (`crash_app.py`) runs COUNT workflows of 6 steps (a fan-out of 3 and a
durable sleep); every step body appends a line to a marker file outside the database
just before it returns, so the marker counts how many times each step body ran.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.crash_app import expected, run_ids
from tests.worker_process import finish

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).with_name("crash_app.py")
COUNT = 5
STEPS_PER_RUN = 6


def app_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_")}
    env.update({"WORKFLOW_TARGET_WORLD": "sqlite", "LOG_LEVEL": "WARNING",
                "WORKFLOW_SQLITE_PATH": str(tmp_path / "crash.db"), "PYTHONPATH": str(ROOT)})
    return env


def spawn(mode: str, env: dict[str, str], marker: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(APP), mode, str(marker), str(COUNT)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def marker_lines(marker: Path) -> list[list[str]]:
    if not marker.exists():
        return []
    return [line.split() for line in marker.read_text().splitlines() if line.strip()]


def body_runs(marker: Path) -> collections.Counter[tuple[str, str]]:
    """How many times each step body ran, by (run id, correlation id)."""
    return collections.Counter((line[0], line[1]) for line in marker_lines(marker))


def query(env: dict[str, str], sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(env["WORKFLOW_SQLITE_PATH"])
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def kill_mid_run(env: dict[str, str], marker: Path, after_lines: int) -> None:
    """Start the runs in a worker and SIGKILL it once `after_lines` step bodies ran."""
    worker = spawn("start", env, marker)
    try:
        deadline = time.monotonic() + 10
        while len(marker_lines(marker)) < after_lines:
            assert worker.poll() is None, "the worker exited before the kill"
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.01)
    finally:
        worker.send_signal(signal.SIGKILL)  # a no-op if it already exited and was reaped
        # reap it: a zombie's pid still looks alive, so its leases would not be taken back
        _, err = worker.communicate(timeout=10)
    assert worker.returncode == -signal.SIGKILL, err[-3000:]


# kill during the fan-out (the loads are done), or after it (in the sleep or later)
KILL_POINTS = [pytest.param(COUNT + 2, id="during-fan-out"),
               pytest.param(4 * COUNT + 1, id="after-fan-out")]


@pytest.mark.parametrize("after_lines", KILL_POINTS)
def test_completed_steps_are_not_rerun_after_sigkill(tmp_path: Path, after_lines: int) -> None:
    env, marker = app_env(tmp_path), tmp_path / "marker.txt"
    kill_mid_run(env, marker, after_lines)
    completed_before_kill = set(query(
        env, "SELECT workflow_run_id, correlation_id FROM workflow_events "
             "WHERE event_type = 'step_completed'"))
    ran_before_kill = body_runs(marker)
    assert completed_before_kill, "the kill landed before any step was recorded"
    assert sum(ran_before_kill.values()) < COUNT * STEPS_PER_RUN, "the kill landed too late"

    results = finish(spawn("resume", env, marker), 15)

    assert results == {run_id: expected(seed) for seed, run_id in enumerate(run_ids(COUNT))}
    runs = body_runs(marker)
    assert len(runs) == COUNT * STEPS_PER_RUN  # every step of every run ran
    rerun = {key: runs[key] for key in completed_before_kill if runs[key] != 1}
    assert rerun == {}, "steps recorded as completed before the kill ran again"
    assert max(runs.values()) <= 2
    # a step may run twice only if its body finished but its completion was not recorded
    twice = {key for key, n in runs.items() if n == 2}
    assert twice <= set(ran_before_kill) - completed_before_kill


def test_new_process_resumes_every_unfinished_run(tmp_path: Path) -> None:
    env, marker = app_env(tmp_path), tmp_path / "marker.txt"
    kill_mid_run(env, marker, COUNT + 2)
    unfinished = query(env, "SELECT id, status FROM workflow_runs ORDER BY id")
    assert [row[0] for row in unfinished] == sorted(run_ids(COUNT))
    assert {row[1] for row in unfinished} <= {"pending", "running"}

    results = finish(spawn("resume", env, marker), 15)  # it starts no run: it only waits

    assert set(results) == set(run_ids(COUNT))
    rows = query(env, "SELECT id, status, output FROM workflow_runs ORDER BY id")
    assert {(run_id, status) for run_id, status, _ in rows} == {
        (run_id, "completed") for run_id in run_ids(COUNT)}
    outputs = {run_id: json.loads(output) for run_id, _, output in rows}
    for seed, run_id in enumerate(run_ids(COUNT)):
        assert results[run_id] == outputs[run_id] == expected(seed)
    pids = {line[5] for line in marker_lines(marker)}
    assert len(pids) == 2  # the killed worker and the new process both ran steps


def test_starting_the_same_run_ids_from_two_processes_gives_one_run_each(
        tmp_path: Path) -> None:
    env, marker = app_env(tmp_path), tmp_path / "marker.txt"
    first = spawn("start", env, marker)
    second = spawn("start", env, marker)
    first_results, second_results = finish(first, 15), finish(second, 15)

    want = {run_id: expected(seed) for seed, run_id in enumerate(run_ids(COUNT))}
    assert first_results == second_results == want
    assert query(env, "SELECT id FROM workflow_runs ORDER BY id") == [
        (run_id,) for run_id in sorted(run_ids(COUNT))]
    created = query(env, "SELECT workflow_run_id, count(*) FROM workflow_events "
                         "WHERE event_type = 'run_created' GROUP BY workflow_run_id")
    assert sorted(created) == [(run_id, 1) for run_id in sorted(run_ids(COUNT))]
    runs = body_runs(marker)
    assert len(runs) == COUNT * STEPS_PER_RUN and set(runs.values()) == {1}
