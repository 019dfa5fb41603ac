"""Bad usage exits 2, a world that cannot be opened exits 1: one line, no traceback."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

import pytest

from tests.cli.helpers import run_cli
from worldflow.cli.main import main, redact_url

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize("args", [
    ["inspect", "runs", "--limit", "0"],
    ["inspect", "runs", "--limit", "abc"],
    ["inspect", "runs", "--limit", "100000"],
    ["inspect", "runs", "--status", "bogus"],
    ["inspect", "runs", "--cursor", "not-a-cursor"],
    ["inspect", "runs", "--port", "99999", "--web"],
    ["inspect"],
    ["inspect", "steps"],
    ["frobnicate"],
    ["--backend", "mongodb", "inspect", "runs"],
    [],
])
def test_bad_usage_exits_2_with_one_line(populated_db: str, args: list[str]) -> None:
    result = run_cli(populated_db, *args)
    assert result.code == 2, result
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "error" in result.err
    assert "Traceback" not in result.err
    assert result.out == ""


def test_version_prints_the_installed_version_and_exits_0() -> None:
    from importlib.metadata import version

    result = run_cli(None, "--version")
    assert result.code == 0, result
    assert result.out.strip() == f"worldflow {version('worldflow')}"


def test_web_ui_beyond_loopback_without_auth_token_is_one_line(populated_db: str) -> None:
    result = run_cli(populated_db, "inspect", "runs", "--web", "--port", "0",
                     "--host", "0.0.0.0")
    assert result.code == 1, result
    assert "--auth-token" in result.err
    assert "Traceback" not in result.err


def test_help_exits_0(populated_db: str) -> None:
    result = run_cli(populated_db, "inspect", "runs", "--help")
    assert result.code == 0
    assert "--cursor" in result.out and "--web" in result.out


def test_missing_sqlite_file_names_the_world_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    result = run_cli(str(path), "inspect", "runs")
    assert result.code == 1
    assert result.err == f"worldflow: sqlite world at {path}: no such file " \
                         f"(set WORKFLOW_SQLITE_PATH or --path)\n"
    assert not path.exists()


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("shopping list\n" * 200)
    result = run_cli(str(path), "inspect", "runs")
    assert result.code == 1
    assert result.err.startswith(f"worldflow: sqlite world at {path}: ")
    assert len(result.err.splitlines()) == 1
    assert "Traceback" not in result.err


def test_unreachable_postgres_names_the_address_without_the_password() -> None:
    url = "postgresql://app:s3cret@127.0.0.1:1/orders"
    result = run_cli(None, "--backend", "postgres", "--url", url, "inspect", "runs",
                     timeout=60)
    assert result.code == 1
    assert result.err.startswith(
        "worldflow: postgres world at postgresql://app:***@127.0.0.1:1/orders: "), result.err
    assert len(result.err.splitlines()) == 1
    assert "s3cret" not in result.err


def test_postgres_without_a_url_is_bad_usage() -> None:
    result = run_cli(None, "--backend", "postgres", "inspect", "runs")
    assert result.code == 2
    assert "WORKFLOW_POSTGRES_URL" in result.err


def test_world_options_are_accepted_after_the_command(populated_db: str) -> None:
    result = run_cli(None, "inspect", "runs", "--path", populated_db, "--json")
    assert result.code == 0, result.err
    assert len(result.json()["runs"]) == 3
    env_wins_nothing = run_cli(populated_db, "inspect", "runs", "--backend", "memory", "--json")
    assert env_wins_nothing.json() == {"runs": [], "next_cursor": None}


def test_redact_url_hides_passwords() -> None:
    assert redact_url("postgresql://u:pw@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact_url("postgresql://u@db/x") == "postgresql://u@db/x"
    assert redact_url("host=db password=pw dbname=x") == "host=db password=*** dbname=x"


def test_main_in_process_on_the_memory_world(capsys: pytest.CaptureFixture[str]) -> None:
    """The entry point itself (what the console script calls) returns the exit status."""
    assert main(["--backend", "memory", "inspect", "runs", "--json"]) == 0
    assert capsys.readouterr().out.strip() == '{\n  "runs": [],\n  "next_cursor": null\n}'
    assert main(["--backend", "memory", "inspect", "runs", "missing"]) == 1
    assert capsys.readouterr().err == "worldflow: run not found: missing\n"
    assert os.environ.get("WORKFLOW_TARGET_WORLD") != "memory"  # nothing leaked


def test_web_port_in_use_is_one_line(populated_db: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli(populated_db, "inspect", "runs", "--web", "--port", str(port))
    assert result.code == 1
    assert result.err.startswith(f"worldflow: cannot listen on 127.0.0.1:{port}: Address "
                                 f"already in use")
    assert len(result.err.splitlines()) == 1


def test_python_dash_m_worldflow_is_the_worldflow_command() -> None:
    """`python -m worldflow` runs the same command as the console script (a bad
    argument included: one line, exit 2)."""
    import subprocess
    import sys
    from importlib.metadata import version

    ok = subprocess.run([sys.executable, "-m", "worldflow", "--version"],
                        capture_output=True, text=True, timeout=60)
    assert (ok.returncode, ok.stdout.strip()) == (0, f"worldflow {version('worldflow')}")
    bad = subprocess.run([sys.executable, "-m", "worldflow", "inspect", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2, bad
    assert "invalid choice: 'nope'" in bad.stderr and "Traceback" not in bad.stderr
