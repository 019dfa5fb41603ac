"""`worldflow start` as a user runs it: a subprocess in a project directory holding a
module of workflows, on SQLite and on Postgres."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.cli.helpers import Result, cli_env

if TYPE_CHECKING:
    from pathlib import Path

FLOWS = textwrap.dedent('''
    from worldflow import step, workflow

    @step(max_retries=0)
    async def double(x: int) -> int:
        if x < 0:
            raise ValueError(f"negative: {x}")
        return x * 2

    @workflow
    async def doubler(x: int, label: str = "n") -> dict:
        return {label: await double(x)}

    @workflow(name="renamed-flow")
    async def python_name() -> str:
        return "renamed"
''')


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "app_flows.py").write_text(FLOWS)
    return tmp_path


def worldflow(project: Path, *args: str, postgres: str | None = None) -> Result:
    if postgres is None:
        env = cli_env(str(project / "runs.db"))
    else:
        env = cli_env(None, WORKFLOW_TARGET_WORLD="postgres", WORKFLOW_POSTGRES_URL=postgres,
                      WORKFLOW_POSTGRES_JOB_PREFIX="st" + uuid.uuid4().hex[:8])
    proc = subprocess.run([sys.executable, "-m", "worldflow.cli.main", *args],
                          capture_output=True, text=True, timeout=90, env=env, cwd=project)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_version_is_printed() -> None:
    proc = subprocess.run([sys.executable, "-m", "worldflow.cli.main", "--version"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert proc.stdout.startswith("worldflow ") and proc.stdout.split()[1][0].isdigit()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_start_wait_prints_the_run_id_then_the_result(
        project: Path, backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    result = worldflow(project, "start", "doubler", "--import", "app_flows", "--json", "[21]",
                       "--wait", postgres=url)
    assert result.code == 0, result.err
    run_id, output = result.out.splitlines()
    assert run_id.startswith("run_")
    assert json.loads(output) == {"n": 42}
    shown = worldflow(project, "inspect", "runs", run_id, "--json", postgres=url)
    assert shown.code == 0, shown.err
    assert shown.json()["status"] == "completed"
    assert shown.json()["output"] == {"n": 42}


def test_start_with_kwargs_and_json_output_is_one_document(project: Path) -> None:
    result = worldflow(project, "start", "doubler", "--import", "app_flows", "--json", "[4]",
                       "--kwargs", '{"label": "m"}', "--wait", "--output", "json")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    assert document["status"] == "completed"
    assert document["result"] == {"m": 8}
    assert document["error"] is None


def test_start_without_wait_stores_a_pending_run_and_a_chosen_id_is_idempotent(
        project: Path) -> None:
    first = worldflow(project, "start", "app_flows:doubler", "--json", "[5]",
                      "--run-id", "order-5")
    assert (first.code, first.out) == (0, "order-5\n"), first.err
    again = worldflow(project, "start", "doubler", "--import", "app_flows", "--json", "[5]",
                      "--run-id", "order-5", "--output", "json")
    assert again.code == 0, again.err
    assert again.json() == {"run_id": "order-5", "status": "pending", "result": None,
                            "error": None}
    listed = worldflow(project, "inspect", "runs", "--json")
    assert [run["run_id"] for run in listed.json()["runs"]] == ["order-5"]
    # a later start with --wait (a worker) runs the stored run to its end
    done = worldflow(project, "start", "doubler", "--import", "app_flows", "--json", "[5]",
                     "--run-id", "order-5", "--wait")
    assert done.code == 0, done.err
    assert done.out.splitlines() == ["order-5", '{"n": 10}']


def test_a_workflow_is_found_by_its_registered_or_python_name(project: Path) -> None:
    for name in ("renamed-flow", "python_name"):
        result = worldflow(project, "start", name, "--import", "app_flows", "--wait")
        assert result.code == 0, result.err
        assert result.out.splitlines()[1] == '"renamed"'


def test_a_failed_run_exits_1_printing_its_error(project: Path) -> None:
    result = worldflow(project, "start", "doubler", "--import", "app_flows", "--json", "[-3]",
                       "--wait")
    assert result.code == 1
    run_id = result.out.strip()
    assert result.err.strip() == (
        f"worldflow: run {run_id} failed: StepFailedError: step 'double' failed after "
        f"1 attempt(s): ValueError: negative: -3")
    assert "Traceback" not in result.err


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--json", "[1,"], 1, "worldflow: --json is not valid JSON: Expecting value: line 1 "
                           "column 4 (char 3)"),
    (["--json", '{"x": 1}'], 1, "worldflow: --json must be a JSON list, got '{\"x\": 1}'"),
    (["--kwargs", "[1]"], 1, "worldflow: --kwargs must be a JSON object, got '[1]'"),
    (["--json", "[1, 2, 3]"], 1, "worldflow: cannot start doubler: workflow 'doubler': too "
                                 "many positional arguments (its signature is doubler(x: "
                                 "int, label: str = 'n') -> dict)"),
    (["--kwargs", '{"nope": 1}'], 1, "worldflow: cannot start doubler: workflow 'doubler': "),
    (["--json", "[1]", "--run-id", "a b"], 1, "worldflow: cannot start doubler: run_id must"),
])
def test_bad_arguments_exit_1_with_one_line_and_store_nothing(
        project: Path, args: list[str], code: int, message: str) -> None:
    result = worldflow(project, "start", "doubler", "--import", "app_flows", *args, "--wait")
    assert result.code == code, result.err
    assert result.err.startswith(message), result.err
    assert len(result.err.strip().splitlines()) == 1
    assert result.out == ""
    assert not (project / "runs.db").exists()  # nothing was opened, nothing stored


def test_a_module_that_cannot_be_imported_exits_2(project: Path) -> None:
    (project / "broken_flows.py").write_text("raise RuntimeError('config missing')\n")
    missing = worldflow(project, "start", "doubler", "--import", "no_such_module")
    assert missing.code == 2
    assert missing.err.strip() == ("worldflow: error: cannot import no_such_module: "
                                   "ModuleNotFoundError: No module named 'no_such_module'")
    broken = worldflow(project, "start", "doubler", "--import", "broken_flows")
    assert broken.code == 2
    assert broken.err.strip() == ("worldflow: error: cannot import broken_flows: "
                                  "RuntimeError: config missing")
    assert not (project / "runs.db").exists()


def test_an_unknown_workflow_exits_2_naming_the_known_ones(project: Path) -> None:
    result = worldflow(project, "start", "tripler", "--import", "app_flows")
    assert result.code == 2
    assert result.err.strip() == ("worldflow: error: no workflow named 'tripler'; known "
                                  "workflows: doubler, renamed-flow")
    bare = worldflow(project, "start", "doubler")
    assert bare.code == 2
    assert "--import MODULE" in bare.err


def test_inspect_steps_shows_a_failed_steps_traceback_from_the_users_line(
        project: Path) -> None:
    failed = worldflow(project, "start", "doubler", "--import", "app_flows", "--json", "[-1]",
                       "--wait")
    run_id = failed.out.strip()
    result = worldflow(project, "inspect", "steps", run_id)
    assert result.code == 0, result.err
    trace = result.out[result.out.index("step double #1 failed"):].splitlines()
    assert trace[0] == "step double #1 failed: ValueError: negative: -1"
    assert trace[1] == "Traceback (most recent call last):"
    assert trace[2] == f'  File "{project / "app_flows.py"}", line 7, in double'
    assert trace[-1] == "ValueError: negative: -1"
    assert not any("worldflow/core" in line for line in trace)
    # the stored traceback is whole: --json still has the engine's frames
    steps = worldflow(project, "inspect", "steps", run_id, "--json").json()["steps"]
    assert "worldflow/core/steps.py" in steps[0]["error"]["traceback"]


def test_start_in_the_memory_world_needs_wait(project: Path) -> None:
    lost = worldflow(project, "--backend", "memory", "start", "doubler", "--import",
                     "app_flows", "--json", "[1]")
    assert lost.code == 2
    assert lost.err.strip() == ("worldflow: error: a run started in the memory world is "
                                "gone when this command ends: add --wait, or use the "
                                "sqlite or postgres world")
    waited = worldflow(project, "--backend", "memory", "start", "doubler", "--import",
                       "app_flows", "--json", "[1]", "--wait")
    assert waited.code == 0, waited.err
    assert waited.out.splitlines()[1] == '{"n": 2}'
