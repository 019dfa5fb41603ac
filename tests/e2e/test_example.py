"""`python examples/data_processing.py` as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "data_processing.py"
EXPECTED = {
    "fetched": 10,
    "processed": 9,
    "failed": [{"id": 7, "error": "no enrichment data for item 7"}],
    "reviewed": [4, 5, 6],
    "total_amount": 3576,
    "total_score": 354,
}


def run_example(env_overrides: dict[str, str], cwd: Path, *args: str) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_")}
    env.update(env_overrides)
    proc = subprocess.run([sys.executable, str(EXAMPLE), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


def printed(stdout: str, label: str) -> str:
    lines = [ln for ln in stdout.splitlines() if ln.startswith(f"{label}: ")]
    assert len(lines) == 1, stdout
    return lines[0].removeprefix(f"{label}: ")


def test_example_runs_on_the_sqlite_world_and_prints_its_result(tmp_path: Path) -> None:
    db = tmp_path / "example.db"
    stdout, _ = run_example({"WORKFLOW_SQLITE_PATH": str(db)}, tmp_path)
    assert json.loads(printed(stdout, "result")) == EXPECTED
    assert printed(stdout, "status") == "completed"
    assert "process_item   failed" in stdout
    run_id = printed(stdout, "run id")
    conn = sqlite3.connect(db)
    try:
        status = conn.execute("SELECT status FROM workflow_runs WHERE id = ?",
                              (run_id,)).fetchone()
        steps = conn.execute("SELECT count(*) FROM workflow_steps WHERE workflow_run_id = ?",
                             (run_id,)).fetchone()
    finally:
        conn.close()
    assert status == ("completed",)
    assert steps == (28,)  # 1 fetch, 10 validate, 10 process, 3 review, 3 publish, 1 aggregate


def test_example_uses_the_default_sqlite_file_under_the_working_directory(
        tmp_path: Path) -> None:
    stdout, _ = run_example({}, tmp_path)
    assert json.loads(printed(stdout, "result")) == EXPECTED
    assert (tmp_path / ".worldflow" / "worldflow.db").is_file()


def test_example_runs_on_the_memory_world(tmp_path: Path) -> None:
    stdout, _ = run_example({"WORKFLOW_TARGET_WORLD": "memory"}, tmp_path)
    assert json.loads(printed(stdout, "result")) == EXPECTED
    assert printed(stdout, "status") == "completed"
    assert not (tmp_path / ".worldflow").exists()


def test_example_started_again_with_the_same_run_id_returns_the_first_run(
        tmp_path: Path) -> None:
    env = {"WORKFLOW_SQLITE_PATH": str(tmp_path / "example.db")}
    first, _ = run_example(env, tmp_path, "--run-id", "nightly-1")
    again, _ = run_example(env, tmp_path, "--run-id", "nightly-1", "--limit", "3")
    assert printed(first, "run id") == printed(again, "run id") == "nightly-1"
    # the existing run's result, not a new run with --limit 3
    assert json.loads(printed(again, "result")) == EXPECTED
