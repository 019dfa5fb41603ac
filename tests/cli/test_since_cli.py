"""`worldflow inspect runs --since TIME|AGE` as a subprocess: ISO 8601 times (naive =
UTC) and ages counted back from now; a bad value is one line and opens nothing."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import msgspec
import pytest

from tests.cli.helpers import run_async, run_cli
from worldflow import create_world
from worldflow.core.records import NewRun

if TYPE_CHECKING:
    from pathlib import Path

JANUARY = "since-january"  # 2024-01-01T00:00Z
JUNE_NOON = "since-june-noon"  # 2024-06-01T12:00Z
HOUR_AGO = "since-hour-ago"
FIVE_DAYS_AGO = "since-five-days-ago"


async def _populate(path: str) -> None:
    now = dt.datetime.now(dt.UTC)
    created = {JANUARY: dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
               JUNE_NOON: dt.datetime(2024, 6, 1, 12, tzinfo=dt.UTC),
               FIVE_DAYS_AGO: now - dt.timedelta(days=5),
               HOUR_AGO: now - dt.timedelta(hours=1)}
    world = create_world("sqlite", path=path)
    await world.open()  # storage only: no engine runs them
    try:
        for run_id, at in created.items():
            await world.create_run(NewRun(run_id, "since_flow",
                                          msgspec.Raw(b'{"args":[],"kwargs":{}}'), at),
                                   lease_owner=None, lease_seconds=60)
    finally:
        await world.close()


@pytest.fixture(scope="module")
def dated_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("cli-since") / "worldflow.db")
    run_async(_populate, path)
    return path


def listed(db: str, *args: str) -> list[str]:
    result = run_cli(None, "--path", db, "inspect", "runs", "--json", *args)
    assert result.code == 0, result.err
    return [run["run_id"] for run in result.json()["runs"]]


def test_without_since_every_run_is_listed_newest_first(dated_db: str) -> None:
    assert listed(dated_db) == [HOUR_AGO, FIVE_DAYS_AGO, JUNE_NOON, JANUARY]


@pytest.mark.parametrize(("since", "expected"), [
    ("2024-05-01", [HOUR_AGO, FIVE_DAYS_AGO, JUNE_NOON]),
    ("2024-06-01T12:00:00", [HOUR_AGO, FIVE_DAYS_AGO, JUNE_NOON]),  # at or after
    ("2024-06-01T12:30", [HOUR_AGO, FIVE_DAYS_AGO]),  # naive: UTC, after noon UTC
    ("2024-06-01T13:30+02:00", [HOUR_AGO, FIVE_DAYS_AGO, JUNE_NOON]),  # 11:30 UTC
    ("2024-06-01T12:00:01Z", [HOUR_AGO, FIVE_DAYS_AGO]),
    ("2023-12-31T23:00-02:00", [HOUR_AGO, FIVE_DAYS_AGO, JUNE_NOON]),  # 01:00 UTC
])
def test_since_an_iso_time_lists_runs_created_at_or_after_it(
        dated_db: str, since: str, expected: list[str]) -> None:
    assert listed(dated_db, "--since", since) == expected


@pytest.mark.parametrize(("age", "expected"), [
    ("15m", []),
    ("2h", [HOUR_AGO]),
    ("3d", [HOUR_AGO]),
    ("6d", [HOUR_AGO, FIVE_DAYS_AGO]),
    ("1w", [HOUR_AGO, FIVE_DAYS_AGO]),
])
def test_since_an_age_lists_runs_created_within_it(dated_db: str, age: str,
                                                   expected: list[str]) -> None:
    assert listed(dated_db, "--since", age) == expected


def test_since_combines_with_other_filters_and_the_table(dated_db: str) -> None:
    assert listed(dated_db, "--since", "6d", "--limit", "1") == [HOUR_AGO]
    table = run_cli(None, "--path", dated_db, "inspect", "runs", "--since", "15m")
    assert table.code == 0, table.err
    assert "no runs" in table.out


@pytest.mark.parametrize("bad", ["yesterday", "3", "15x", "-2h", "2h ago", "2024-13-01", ""])
def test_bad_since_is_one_line_naming_it_and_opens_nothing(tmp_path: Path,
                                                           bad: str) -> None:
    missing = tmp_path / "never-created.db"
    # --since=VALUE: argparse would take a bare "-2h" for an option
    result = run_cli(None, "--path", str(missing), "inspect", "runs", f"--since={bad}")
    assert result.code == 2
    assert result.out == ""
    [line] = result.err.splitlines()
    assert "--since" in line and repr(bad) in line
    assert not missing.exists()  # parsed before the world is opened
