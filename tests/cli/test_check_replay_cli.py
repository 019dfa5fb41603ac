"""`worldflow check-replay`, run as a user would: a project directory with its workflow
module, runs made by one process, the check by another after the code changed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

from tests.cli.helpers import Result, cli_env

if TYPE_CHECKING:
    from pathlib import Path

APP = '''
from worldflow import patched, receive, step, workflow

@step
async def fetch(n: int) -> int:
    return n + 1

@step
async def audit(n: int) -> int:
    return n

@workflow(name="chk_order")
async def order(n: int, wait: bool) -> int:
    {before}
    got = await fetch(n)
    if wait:
        got += await receive("go")
    return got
'''

MAKE_RUNS = '''
import asyncio, sys
from worldflow import create_world, start
from app import order

async def main() -> None:
    world = create_world(sys.argv[1], **dict(a.split("=", 1) for a in sys.argv[2:]))
    async with world:
        done = await start(order, 1, False, world=world, run_id="done-1")
        print(await done.result(timeout=30))
        for i in (1, 2):
            run = await start(order, i, True, world=world, run_id=f"waits-{i}")
            for _ in range(500):
                events = await world.list_events(run.run_id)
                if any(e.event_type == "step_completed" for e in events):
                    break
                await asyncio.sleep(0.02)

asyncio.run(main())
'''


def write_app(project: Path, before: str = "pass") -> None:
    (project / "app.py").write_text(textwrap.dedent(APP.format(before=before)))


def make_project(tmp_path: Path, *world: str) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    write_app(project)
    (project / "make_runs.py").write_text(MAKE_RUNS)
    done = subprocess.run([sys.executable, "make_runs.py", *world], cwd=project,
                          capture_output=True, text=True, timeout=120,
                          env=cli_env(None, PYTHONDONTWRITEBYTECODE="1"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    return project


def check(project: Path, *args: str) -> Result:
    proc = subprocess.run([sys.executable, "-m", "worldflow.cli.main", "check-replay", *args],
                          cwd=project, capture_output=True, text=True, timeout=120,
                          env=cli_env(None, PYTHONDONTWRITEBYTECODE="1"))
    return Result(proc.returncode, proc.stdout, proc.stderr)


def sqlite_project(tmp_path: Path) -> tuple[Path, str]:
    db = str(tmp_path / "app.db")
    return make_project(tmp_path, "sqlite", f"path={db}"), db


def test_unchanged_code_replays_every_running_run_and_exits_0(tmp_path: Path) -> None:
    project, db = sqlite_project(tmp_path)
    result = check(project, "--import", "app", "--path", db)
    assert result.code == 0, result.err
    assert result.out == "checked 2 runs (pending or running) against app: 2 replay, " \
                         "0 would fail\n"
    assert result.err == ""


def test_an_incompatible_change_lists_each_failing_run_and_exits_1(tmp_path: Path) -> None:
    project, db = sqlite_project(tmp_path)
    write_app(project, before="await audit(n)")  # a step inserted before fetch
    result = check(project, "--import", "app", "--path", db)
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[0] == "checked 2 runs (pending or running) against app: 0 replay, " \
                       "2 would fail"
    assert sorted(lines[1:]) == [
        f"FAIL chk_order waits-{i}: at position 1 the log records step 'fetch', the code "
        f"has step 'audit'" for i in (1, 2)]
    assert result.err == "worldflow: 2 of 2 runs would fail to replay under this code\n"
    as_json = check(project, "--import", "app", "--path", db, "--json")
    assert as_json.code == 1
    report = json.loads(as_json.out)
    assert (report["checked"], report["passed"], report["failed"]) == (2, 0, 2)
    failure = min(report["failures"], key=lambda f: f["run_id"])
    assert failure["run_id"] == "waits-1" and failure["workflow"] == "chk_order"
    assert failure["error_type"] == "NonDeterminismError"
    assert (failure["position"], failure["expected"], failure["found"]) == (
        "1", "step 'fetch'", "step 'audit'")
    # --status picks other runs: the completed one fails too; --workflow filters
    completed = check(project, "--import", "app", "--path", db, "--status", "completed")
    assert completed.code == 1 and "FAIL chk_order done-1" in completed.out
    other = check(project, "--import", "app", "--path", db, "--workflow", "nothing")
    assert other.code == 0 and other.out.startswith("checked 0 runs")


def test_a_patched_change_passes_for_the_runs_that_took_the_old_branch(
        tmp_path: Path) -> None:
    project, db = sqlite_project(tmp_path)
    write_app(project, before='if patched("audit-first"):\n        await audit(n)')
    result = check(project, "--import", "app", "--path", db)
    assert result.code == 0, result.out + result.err


def test_a_module_that_fails_to_import_is_exit_2_with_one_line(tmp_path: Path) -> None:
    project, db = sqlite_project(tmp_path)
    (project / "app.py").write_text("from worldflow import workflow\n\ndef broken(:\n")
    result = check(project, "--import", "app", "--path", db)
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith("worldflow: error: cannot import app: SyntaxError: ")
    assert f"{project / 'app.py'}:3)" in result.err
    assert "Traceback" not in result.err and len(result.err.splitlines()) == 1
    (project / "app.py").write_text("import os\n\nraise RuntimeError('no config')\n")
    result = check(project, "--import", "app", "--path", db)
    assert (result.code, result.err) == (
        2, f"worldflow: error: cannot import app: RuntimeError: no config "
           f"({project / 'app.py'}:3)\n")
    result = check(project, "--import", "no_such_module_here", "--path", db)
    assert (result.code, result.err) == (
        2, "worldflow: error: cannot import no_such_module_here: ModuleNotFoundError: "
           "No module named 'no_such_module_here'\n")


def test_a_workflow_the_modules_do_not_define_fails_its_runs(tmp_path: Path) -> None:
    project, db = sqlite_project(tmp_path)
    (project / "other.py").write_text("")
    result = check(project, "--import", "other", "--path", db)
    assert result.code == 1
    assert "FAIL chk_order waits-1: RegistrationError: run waits-1 is a run of workflow " \
           "'chk_order', which is not registered in this process" in result.out


def test_check_replay_needs_import() -> None:
    result = check_in_cwd("check-replay")
    assert result.code == 2 and "--import" in result.err


def check_in_cwd(*args: str) -> Result:
    proc = subprocess.run([sys.executable, "-m", "worldflow.cli.main", *args],
                          capture_output=True, text=True, timeout=60, env=cli_env(None))
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_check_replay_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    prefix = f"chk{tmp_path.name[-8:]}"
    project = make_project(tmp_path, "postgres", f"connection_string={postgres_url}",
                           f"job_prefix={prefix}")
    args = ("--import", "app", "--url", postgres_url, "--workflow", "chk_order")
    assert check(project, *args).code == 0
    write_app(project, before="await audit(n)")
    result = check(project, *args, "--json")
    assert result.code == 1
    assert {f["run_id"] for f in json.loads(result.out)["failures"]} == {"waits-1", "waits-2"}


def test_a_run_whose_log_cannot_be_read_fails_and_the_others_are_still_checked(
        tmp_path: Path) -> None:
    import contextlib
    import sqlite3

    project, db = sqlite_project(tmp_path)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE workflow_events SET payload = '{not json' "
                     "WHERE workflow_run_id = 'waits-1' AND seq = 2")
    result = check(project, "--import", "app", "--path", db)
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[0].endswith("1 replay, 1 would fail")
    assert lines[1].startswith("FAIL chk_order waits-1: CorruptRecordError: run waits-1: "
                               "the stored event at seq 2 cannot be decoded")
