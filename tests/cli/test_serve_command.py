"""`worldflow serve` and `worldflow postgres-setup` wiring."""

from __future__ import annotations

import re
import select
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx

from tests.cli.helpers import cli_env, run_cli

if TYPE_CHECKING:
    from pathlib import Path


def test_serve_answers_on_the_transport_paths_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "worldflow.cli.main", "serve", "--port", "0", "--import",
         "tests.cli.flows"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env(str(tmp_path / "served.db")))
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "serve did not start within 30s"
        line = proc.stdout.readline()
        match = re.search(r"on (http://127\.0\.0\.1:(\d+)/)", line)
        assert match and match.group(2) != "0", line
        base = match.group(1)
        assert httpx.get(f"{base}.well-known/workflow/v1/webhook/nope").status_code == 404
        assert httpx.post(f"{base}.well-known/workflow/v1/flow", content=b"{}").status_code \
            == 401
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (tmp_path / "served.db").exists()


def test_serve_reports_a_module_it_cannot_import(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path / "x.db"), "serve", "--import", "no_such_module_here")
    assert result.code == 1
    assert result.err == "worldflow: cannot import no_such_module_here: " \
                         "No module named 'no_such_module_here'\n"


def test_postgres_setup_needs_a_url() -> None:
    result = run_cli(None, "postgres-setup")
    assert result.code == 2
    assert result.err == "worldflow: error: postgres-setup needs a URL: --url or " \
                         "WORKFLOW_POSTGRES_URL\n"
