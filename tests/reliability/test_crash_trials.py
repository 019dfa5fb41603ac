"""Crash trials: SIGKILL a worker at a random moment, start it again, count the damage.

Each trial runs RUNS workflows of 10 steps (a fan-out and a durable sleep) in a real
subprocess, kills it with SIGKILL at a random moment, and starts a new process on the
same world (on postgres, a second live process also takes over by lease). Every step
body appends "<step_id> <attempt> <pid>" to a marker file outside the database.

Counted and asserted: runs lost 0, results wrong 0, completed steps re-run 0, steps run
more than twice 0. CI runs a few trials per world; the full 50 per world:

    WORLDFLOW_CRASH_TRIALS=50 pytest tests/reliability -q -s
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.trial_app import expected

pytestmark = pytest.mark.slow

APP = Path(__file__).with_name("trial_app.py")
RUNS = 4
TRIALS = int(os.environ.get("WORLDFLOW_CRASH_TRIALS", "3"))
ROOT = Path(__file__).resolve().parents[2]


def spawn(env: dict[str, str], marker: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(APP), str(marker), str(RUNS)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def completed_step_ids(kind: str, env: dict[str, str]) -> set[str]:
    """Steps whose completion is in the database (read right after the kill)."""
    query = ("SELECT workflow_run_id, correlation_id FROM workflow_events "
             "WHERE event_type = 'step_completed'")
    if kind == "sqlite":
        conn = sqlite3.connect(env["WORKFLOW_SQLITE_PATH"])
        try:
            rows = conn.execute(query).fetchall()
        except sqlite3.OperationalError as exc:
            # killed before it created its tables (a slow start): nothing was done
            if "no such table" not in str(exc):
                raise
            rows = []
        finally:
            conn.close()
    else:
        import asyncio

        import asyncpg

        async def fetch() -> list[Any]:
            conn = await asyncpg.connect(env["WORKFLOW_POSTGRES_URL"])
            try:
                return list(await conn.fetch(
                    query + " AND workflow_run_id = ANY($1::text[])",
                    [f"trial-{i}" for i in range(RUNS)]))
            finally:
                await conn.close()

        rows = asyncio.run(fetch())
    return {f"{r[0]}:{r[1]}" for r in rows}


def one_trial(kind: str, tmp: Path, env: dict[str, str], rng: random.Random) -> dict[str, Any]:
    marker = tmp / "marker.txt"
    first = spawn(env, marker)
    time.sleep(rng.uniform(0.2, 1.6))
    first.send_signal(signal.SIGKILL)
    first.communicate()  # reaps it and closes its pipes
    done_before_kill = completed_step_ids(kind, env)
    survivors = [spawn(env, marker)]
    if kind == "postgres":
        survivors.append(spawn(env, marker))  # a second live process shares the load
    outputs = []
    for proc in survivors:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(out)
    results: dict[str, int] = {}
    for out in outputs:
        for line in out.splitlines():
            if line.startswith("DONE "):
                results.update(json.loads(line[5:]))
    lines = [ln.split() for ln in marker.read_text().splitlines() if ln.strip()]
    runs_by_step: collections.Counter[str] = collections.Counter(ln[0] for ln in lines)
    killed = str(first.pid)
    rerun = [ln for ln in lines if ln[0] in done_before_kill and ln[2] != killed]
    return {
        "runs_lost": sum(1 for i in range(RUNS) if f"trial-{i}" not in results),
        "results_wrong": sum(1 for i in range(RUNS)
                             if results.get(f"trial-{i}") not in (None, expected(i))),
        "completed_steps_rerun": len(rerun),
        "steps_run_more_than_twice": sum(1 for n in runs_by_step.values() if n > 2),
        "steps_done_before_kill": len(done_before_kill),
    }


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sigkill_at_random_moments_loses_nothing_and_reruns_no_completed_step(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    rng = random.Random(int(os.environ.get("WORLDFLOW_CRASH_SEED", "0")) or None)
    totals: collections.Counter[str] = collections.Counter()
    for trial in range(TRIALS):
        trial_dir = tmp_path / f"trial{trial}"
        trial_dir.mkdir()
        env = {**os.environ, "WORKFLOW_TARGET_WORLD": kind, "LOG_LEVEL": "WARNING",
               "PYTHONPATH": str(ROOT)}
        if kind == "sqlite":
            env["WORKFLOW_SQLITE_PATH"] = str(trial_dir / "trial.db")
        else:
            env["WORKFLOW_POSTGRES_URL"] = request.getfixturevalue("postgres_url")
            env["WORKFLOW_POSTGRES_JOB_PREFIX"] = "trial" + uuid.uuid4().hex[:8]
            env["TRIAL_LEASE_SECONDS"] = "2"
            _drop_trial_runs(env)
        counts = one_trial(kind, trial_dir, env, rng)
        totals.update(counts)
    print(f"\n{kind}: {TRIALS} trials: {dict(totals)}")
    assert totals["runs_lost"] == 0
    assert totals["results_wrong"] == 0
    assert totals["completed_steps_rerun"] == 0
    assert totals["steps_run_more_than_twice"] == 0


def _drop_trial_runs(env: dict[str, str]) -> None:
    """Postgres trials share a database: remove the previous trial's runs (same ids)."""
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(env["WORKFLOW_POSTGRES_URL"])
        try:
            tables = {r[0] for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            ids = [f"trial-{i}" for i in range(RUNS)]
            for table in ("workflow_events", "workflow_steps", "workflow_hooks",
                          "workflow_inbox", "workflow_streams"):
                if table in tables:
                    await conn.execute(
                        f"DELETE FROM {table} WHERE workflow_run_id = ANY($1::text[])", ids)
            if "workflow_jobs" in tables:
                await conn.execute("DELETE FROM workflow_jobs WHERE run_id = ANY($1::text[])",
                                   ids)
            if "workflow_runs" in tables:
                await conn.execute("DELETE FROM workflow_runs WHERE id = ANY($1::text[])", ids)
        finally:
            await conn.close()

    asyncio.run(drop())
