"""Many processes, one database: load sharing, lease takeover after SIGKILL, and a
Postgres restart in the middle of a load."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

pytestmark = pytest.mark.slow

APP = Path(__file__).with_name("worker_app.py")
ROOT = Path(__file__).resolve().parents[2]


def expected(i: int) -> int:
    return 8 * i + 2


def env_for(url: str, prefix: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "WORKFLOW_TARGET_WORLD": "postgres", "WORKFLOW_POSTGRES_URL": url,
            "WORKFLOW_POSTGRES_JOB_PREFIX": prefix, "PYTHONPATH": str(ROOT),
            "LOG_LEVEL": "WARNING", **extra}


def spawn(mode: str, marker: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(APP), mode, str(marker), *args], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if mode == "work":
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()  # type: ignore
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    if err.strip():  # shown by pytest when the test fails
        print(f"--- worker {proc.pid} stderr ---\n{err[-5000:]}")


async def wait_all_done(url: str, n: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    ids = [f"load-{i}" for i in range(n)]
    rows: list[Any] = []
    while True:
        try:  # the server may be restarting: keep asking
            conn = await asyncpg.connect(url)
            try:
                rows = await conn.fetch("SELECT id, status, output::text FROM workflow_runs "
                                        "WHERE id = ANY($1::text[])", ids)
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            rows = []
        done = [r for r in rows if r["status"] in ("completed", "failed")]
        if len(done) == n or time.monotonic() > deadline:
            return {r["id"]: r for r in rows}
        await asyncio.sleep(0.2)


def marker_lines(marker: Path) -> list[list[str]]:
    return [ln.split() for ln in marker.read_text().splitlines() if ln.strip()]


async def fresh_db(postgres_url: str) -> str:
    base = postgres_url.rsplit("/", 1)[0]
    name = f"wf_mp_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return f"{base}/{name}"


async def drop_db(url: str) -> None:
    base, name = url.rsplit("/", 1)
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def test_three_worker_processes_share_the_load_and_run_each_step_once(
        postgres_url: str, tmp_path: Path) -> None:
    url = await fresh_db(postgres_url)
    marker = tmp_path / "marker.txt"
    env = env_for(url, "shared")
    n = 60
    try:
        workers = [spawn("work", marker, env) for _ in range(3)]
        try:
            await log_grants(url)  # once the workers have made the schema
            enq = spawn("enqueue", marker, env, str(n))
            out, err = enq.communicate(timeout=60)
            assert "ENQUEUED" in out, err
            runs = await wait_all_done(url, n, 90)
        finally:
            for w in workers:
                stop(w)
        assert {r["status"] for r in runs.values()} == {"completed"}
        assert {rid: int(r["output"]) for rid, r in runs.items()} == {
            f"load-{i}": expected(i) for i in range(n)}
        lines = marker_lines(marker)
        per_step = collections.Counter(ln[0] for ln in lines)
        assert len(per_step) == 3 * n and set(per_step.values()) == {1}
        pids = collections.Counter(ln[2] for ln in lines)
        assert len(pids) == 3  # every process took a share
    finally:
        await drop_db(url)


async def test_a_killed_workers_runs_are_taken_over_when_its_lease_expires(
        postgres_url: str, tmp_path: Path) -> None:
    url = await fresh_db(postgres_url)
    marker = tmp_path / "marker.txt"
    env = env_for(url, "takeover", LEASE_SECONDS="2", STEP_SECONDS="0.3")
    n = 12
    try:
        victim = spawn("work", marker, env)
        enq = spawn("enqueue", marker, env, str(n))
        enq.communicate(timeout=60)
        await asyncio.sleep(0.8)  # the victim holds runs, mid-step
        victim.send_signal(signal.SIGKILL)
        victim.communicate()
        killed_at = time.monotonic()
        conn = await asyncpg.connect(url)
        done_before = {f"{r[0]}:{r[1]}" for r in await conn.fetch(
            "SELECT workflow_run_id, correlation_id FROM workflow_events "
            "WHERE event_type = 'step_completed'")}
        held = await conn.fetchval("SELECT count(*) FROM workflow_jobs "
                                   "WHERE lease_owner IS NOT NULL")
        await conn.close()
        assert held > 0
        # a process on another "host" cannot see that the victim died: it waits for the
        # lease to expire (2 s) and then takes the runs over
        survivor = spawn("work", marker, {**env, "WORLDFLOW_HOSTNAME": "elsewhere"})
        try:
            runs = await wait_all_done(url, n, 60)
        finally:
            stop(survivor)
        assert time.monotonic() - killed_at >= 1.5
        assert {int(r["output"]) for r in runs.values()} == {expected(i) for i in range(n)}
        survivor_pid = str(survivor.pid)
        rerun = [ln for ln in marker_lines(marker)
                 if ln[0] in done_before and ln[2] == survivor_pid]
        assert rerun == []  # completed steps were not run again
    finally:
        await drop_db(url)


async def test_a_restarted_process_recovers_its_own_runs_at_once(
        postgres_url: str, tmp_path: Path) -> None:
    url = await fresh_db(postgres_url)
    marker = tmp_path / "marker.txt"
    env = env_for(url, "own", LEASE_SECONDS="60", STEP_SECONDS="0.3")
    n = 8
    try:
        victim = spawn("work", marker, env)
        spawn("enqueue", marker, env, str(n)).communicate(timeout=60)
        await asyncio.sleep(0.8)
        victim.send_signal(signal.SIGKILL)
        victim.communicate()
        t0 = time.monotonic()
        restarted = spawn("work", marker, env)  # same host: sees the dead pid
        try:
            runs = await wait_all_done(url, n, 30)
        finally:
            stop(restarted)
        assert time.monotonic() - t0 < 20  # far less than the 60 s lease
        assert {int(r["output"]) for r in runs.values()} == {expected(i) for i in range(n)}
    finally:
        await drop_db(url)


def restart_postgres() -> None:
    """Restart the test server (WORLDFLOW_TEST_PG_RESTART: a shell command restarting a
    server of your own, so that this test does not disturb others using the default one)."""
    command = os.environ.get("WORLDFLOW_TEST_PG_RESTART")
    if command:
        subprocess.run(command, shell=True, check=True, capture_output=True)
        return
    version = os.listdir("/etc/postgresql")[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                   check=True, capture_output=True)


async def test_postgres_restart_in_the_middle_of_a_load_loses_nothing(
        postgres_url: str, tmp_path: Path) -> None:
    url = await fresh_db(postgres_url)
    marker = tmp_path / "marker.txt"
    env = env_for(url, "restart", STEP_SECONDS="0.05")
    n = 200
    try:
        workers = [spawn("work", marker, env) for _ in range(2)]
        try:
            enq = spawn("enqueue", marker, env, str(n))
            out, err = enq.communicate(timeout=60)
            assert "ENQUEUED" in out, err
            await asyncio.sleep(1.0)
            await asyncio.to_thread(restart_postgres)
            runs = await wait_all_done(url, n, 120)
        finally:
            for w in workers:
                stop(w)
        assert len(runs) == n
        assert {rid: (r["status"], int(r["output"] or -1)) for rid, r in runs.items()} == {
            f"load-{i}": ("completed", expected(i)) for i in range(n)}
        per_step = collections.Counter(ln[0] for ln in marker_lines(marker))
        assert len(per_step) == 3 * n
        assert max(per_step.values()) <= 2  # at least once; at most one retry
    finally:
        await drop_db(url)


async def log_grants(url: str) -> None:
    """Keep every queue-slot grant in `grant_log` (the world prunes old grants)."""
    conn = await asyncpg.connect(url)
    try:
        for _ in range(600):
            if await conn.fetchval("SELECT to_regclass('workflow_queue_grants')") is not None:
                break
            await asyncio.sleep(0.05)
        await conn.execute("""
            CREATE TABLE grant_log (granted_at timestamptz NOT NULL);
            CREATE FUNCTION log_grant() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO grant_log VALUES (NEW.granted_at); RETURN NEW; END $$;
            CREATE TRIGGER log_grant AFTER INSERT ON workflow_queue_grants
                FOR EACH ROW EXECUTE FUNCTION log_grant();""")
    finally:
        await conn.close()


async def test_queue_limits_hold_across_three_worker_processes(
        postgres_url: str, tmp_path: Path) -> None:
    url = await fresh_db(postgres_url)
    marker = tmp_path / "times.txt"
    env = env_for(url, "limits", FLOW="api")
    n = 16
    try:
        workers = [spawn("work", marker, env) for _ in range(3)]
        try:
            await log_grants(url)  # once the workers have made the schema
            enq = spawn("enqueue", marker, env, str(n))
            out, err = enq.communicate(timeout=60)
            assert "ENQUEUED" in out, err
            runs = await wait_all_done(url, n, 90)
        finally:
            for w in workers:
                stop(w)
        assert {rid: int(r["output"]) for rid, r in runs.items()} == {
            f"load-{i}": i for i in range(n)}
        rows = [ln.split() for ln in marker.read_text().splitlines() if ln.strip()]
        spans = {}
        for kind, at, i, _pid in rows:
            spans.setdefault(i, {})[kind] = float(at)
        assert len(spans) == n and len({pid for *_, pid in rows}) > 1
        # concurrency 2: at no start are more than 2 bodies running (including it)
        for span in spans.values():
            running = sum(1 for other in spans.values()
                          if other["start"] <= span["start"] < other["end"])
            assert running <= 2
        # rate (4, 500 ms): no window of 500 ms holds more than 4 grants (the limit counts
        # grants, as the world stamps them; a body starts a scheduling delay later)
        conn = await asyncpg.connect(url)
        try:
            grants = [r[0].timestamp() for r in await conn.fetch(
                "SELECT granted_at FROM grant_log ORDER BY granted_at")]
        finally:
            await conn.close()
        assert len(grants) >= n
        for k in range(len(grants) - 4):
            assert grants[k + 4] - grants[k] >= 0.5 - 0.005
    finally:
        await drop_db(url)


async def test_chaos_restarts_every_5_to_15_seconds_lose_no_run(
        postgres_url: str, tmp_path: Path) -> None:
    import random

    url = await fresh_db(postgres_url)
    marker = tmp_path / "marker.txt"
    env = env_for(url, "chaos", STEP_SECONDS="0.5",
                  WORKFLOW_POSTGRES_WORKER_CONCURRENCY="15")
    n = 500
    restarts = 0
    rng = random.Random(7)
    try:
        workers = [spawn("work", marker, env) for _ in range(2)]
        try:
            enq = spawn("enqueue", marker, env, str(n))
            out, err = enq.communicate(timeout=60)
            assert "ENQUEUED" in out, err
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                runs = await wait_all_done(url, n, rng.uniform(5, 15))
                if sum(r["status"] == "completed" for r in runs.values()) == n:
                    break
                await asyncio.to_thread(restart_postgres)
                restarts += 1
        finally:
            for w in workers:
                stop(w)
        print(f"\nchaos: {restarts} restarts while {n} runs went through")
        assert restarts >= 2
        assert {rid: (r["status"], int(r["output"] or -1)) for rid, r in runs.items()} == {
            f"load-{i}": ("completed", expected(i)) for i in range(n)}
        per_step = collections.Counter(ln[0] for ln in marker_lines(marker))
        assert len(per_step) == 3 * n
        assert max(per_step.values()) <= 2  # at least once; a restart costs one retry
    finally:
        await drop_db(url)
