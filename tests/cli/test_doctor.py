"""`worldflow doctor` checks a world and says what to do: a dead worker's leases fail
it, long-pending runs warn, a healthy world passes."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import msgspec

from tests.cli.helpers import run_async, run_cli
from worldflow import create_world
from worldflow.core.engine import _hostname
from worldflow.core.records import NewRun

if TYPE_CHECKING:
    from pathlib import Path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def _sick_world(path: str, owner: str) -> None:
    world = create_world("sqlite", path=path)
    await world.open()
    try:
        now = world.now()
        await world.create_run(NewRun("doc-leased", "doc_flow", msgspec.Raw(b"{}"), now),
                               lease_owner=owner, lease_seconds=600)
        await world.create_run(NewRun("doc-pending", "doc_flow", msgspec.Raw(b"{}"), now),
                               lease_owner=None, lease_seconds=600)
    finally:
        await world.close()


def test_doctor_reports_a_dead_workers_leases_and_stuck_runs(tmp_path: Path) -> None:
    path = str(tmp_path / "sick.db")
    owner = f"{_hostname()}:{_dead_pid()}:deadbeef"
    run_async(_sick_world, path, owner)
    result = run_cli(path, "doctor", "--stuck-minutes", "0", "--json")
    assert result.code == 1
    document = result.json()
    checks = {check["name"]: check for check in document["checks"]}
    assert document["ok"] is False
    assert checks["schema"]["status"] == "ok" and checks["clock skew"]["status"] == "ok"
    assert checks["dead workers"]["status"] == "fail"
    assert owner in checks["dead workers"]["detail"] and checks["dead workers"]["advice"]
    assert checks["stuck runs"]["status"] == "warn"
    assert "doc-leased" in checks["stuck runs"]["detail"] or "2 run(s)" in (
        checks["stuck runs"]["detail"])
    text = run_cli(path, "doctor", "--stuck-minutes", "0")
    assert text.code == 1 and "what to do:" in text.out and "FAIL" in text.out
    assert text.err.count("\n") == 1


def test_doctor_passes_a_healthy_world(populated_db: str, populated_postgres: str) -> None:
    for args in (("--path", populated_db), ("--url", populated_postgres)):
        result = run_cli(None, "doctor", "--json", *args)
        assert result.code == 0, result.err
        checks = {check["name"]: check for check in result.json()["checks"]}
        assert all(check["status"] == "ok" for check in checks.values()), checks
    assert "ahead of" in checks["clock skew"]["detail"] or "behind" in (
        checks["clock skew"]["detail"])
