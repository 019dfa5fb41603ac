"""`worldflow inspect runs --tag KEY=VALUE` as a subprocess, on SQLite and Postgres; and
a listing that asks the world for no run's steps."""

from __future__ import annotations

import argparse
import io
from typing import Any

import pytest
from rich.console import Console

from tests.cli.helpers import run_cli
from tests.cli.tagged import (
    BILLING,
    OPS_DEV,
    OPS_PROD,
    UNTAGGED,
    CountingWorld,
    populate_tagged,
    tagged_db,
    tagged_postgres,
)
from worldflow import create_world
from worldflow.cli.inspect import inspect_runs

__all__ = ["tagged_db", "tagged_postgres"]  # fixtures


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The CLI options that point at the tagged runs' world."""
    if request.param == "sqlite":
        return ("--path", request.getfixturevalue("tagged_db"))
    return ("--url", request.getfixturevalue("tagged_postgres"))


def _rows(out: str) -> dict[str, str]:
    return {line.split("│")[1].strip(): line for line in out.splitlines()
            if line.startswith("│")}


def test_tag_filter_lists_only_runs_with_every_tag(where: tuple[str, ...]) -> None:
    result = run_cli(None, *where, "inspect", "runs", "--tag", "team=ops")
    assert result.code == 0, result.err
    rows = _rows(result.out)
    assert list(rows) == [OPS_PROD, OPS_DEV]
    assert "env=prod" in rows[OPS_PROD] and "team=ops" in rows[OPS_PROD]
    both = run_cli(None, *where, "inspect", "runs", "--tag", "team=ops", "--tag", "env=dev")
    assert both.code == 0, both.err
    assert list(_rows(both.out)) == [OPS_DEV]
    none = run_cli(None, *where, "inspect", "runs", "--tag", "team=nobody")
    assert none.code == 0 and "no runs" in none.out


def test_json_listing_has_tags_and_the_stored_step_counts(where: tuple[str, ...]) -> None:
    result = run_cli(None, *where, "inspect", "runs", "--json")
    assert result.code == 0, result.err
    runs = {run["run_id"]: run for run in result.json()["runs"]}
    assert list(runs) == [OPS_PROD, OPS_DEV, BILLING, UNTAGGED]
    assert runs[OPS_DEV]["tags"] == {"team": "ops", "env": "dev"}
    assert runs[UNTAGGED]["tags"] == {}
    assert runs[BILLING]["step_counts"] == {"total": 2, "completed": 1, "failed": 1,
                                            "running": 0, "pending": 0}
    paged = run_cli(None, *where, "inspect", "runs", "--tag", "team=ops", "--limit", "1",
                    "--json").json()
    assert [run["run_id"] for run in paged["runs"]] == [OPS_PROD]
    rest = run_cli(None, *where, "inspect", "runs", "--tag", "team=ops", "--limit", "1",
                   "--cursor", paged["next_cursor"], "--json").json()
    assert [run["run_id"] for run in rest["runs"]] == [OPS_DEV]
    assert rest["next_cursor"] is None


def test_one_run_shows_its_tags(where: tuple[str, ...]) -> None:
    result = run_cli(None, *where, "inspect", "runs", OPS_PROD)
    assert result.code == 0, result.err
    [line] = [line for line in result.out.splitlines() if line.startswith("tags")]
    assert "team=ops" in line and "env=prod" in line
    detail = run_cli(None, *where, "inspect", "runs", OPS_PROD, "--json").json()
    assert detail["tags"] == {"team": "ops", "env": "prod"}


@pytest.mark.parametrize(("tags", "message"), [
    (["team"], "tag 'team' is not key=value"),
    (["=ops"], "tag '=ops' is not key=value"),
    (["team=ops", "team=dev"], "'team' is given twice"),
    (["a\tb=1"], "must not contain '=' or control characters"),
])
def test_a_malformed_tag_exits_1_naming_it(tagged_db: str, tags: list[str],
                                           message: str) -> None:
    args = [arg for tag in tags for arg in ("--tag", tag)]
    result = run_cli(None, "--path", tagged_db, "inspect", "runs", *args)
    assert result.code == 1
    assert message in result.err and "Traceback" not in result.err
    assert result.err.count("\n") == 1 and result.out == ""


async def test_listing_n_runs_asks_for_no_steps() -> None:
    async with create_world("memory") as world:
        await populate_tagged(world)
        counting = CountingWorld(world)
        console = Console(file=io.StringIO(), width=200)
        args: Any = argparse.Namespace(run_id=None, status=None, workflow=None, limit=50,
                                       cursor=None, tag=None, json=False)
        await inspect_runs(counting, args, console)  # type: ignore[arg-type]
        assert counting.calls == {"list_runs": 1}
        out = console.file.getvalue()  # type: ignore[attr-defined]
        assert all(run_id in out for run_id in (OPS_PROD, OPS_DEV, BILLING, UNTAGGED))
        assert "1/2 (1 failed)" in out
