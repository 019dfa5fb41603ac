"""`worldflow schedules list|pause|resume|delete|trigger`, run as a user would."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pytest

from tests.cli.helpers import run_async, run_cli
from worldflow import create_schedule, create_world, get_workflow_metadata, workflow
from worldflow.core.schedules import next_tick

if TYPE_CHECKING:
    from pathlib import Path


@workflow(name="cli_sched_nightly")
async def nightly(who: str = "nobody") -> dict[str, Any]:
    return {"who": who, "scheduled_at": get_workflow_metadata().scheduled_at}


async def _create(path: str) -> None:
    async with create_world("sqlite", path=path) as world:
        await create_schedule(nightly, cron="0 3 * * *", args=("ada",),
                              timezone="Europe/Berlin", world=world)
        await create_schedule(nightly, cron="*/15 * * * *", schedule_id="quarterly",
                              catchup="none", world=world)


async def _run_to_end(path: str, run_id: str) -> tuple[str, Any]:
    async with create_world("sqlite", path=path) as world:
        run = await world.wait_run_finished(run_id, timeout=30)
        from worldflow import get_run

        return run.status.value, await (await get_run(run_id, world=world)).result()


@pytest.fixture
def sched_db(tmp_path: Path) -> str:
    path = str(tmp_path / "sched.db")
    run_async(_create, path)
    return path


def test_list_shows_each_schedule_with_its_next_tick(sched_db: str) -> None:
    result = run_cli(sched_db, "schedules", "list", "--json")
    assert result.code == 0, result.err
    listed = result.json()["schedules"]
    assert [s["schedule_id"] for s in listed] == ["cli_sched_nightly", "quarterly"]
    first, second = listed
    assert (first["workflow_name"], first["cron"], first["timezone"], first["catchup"],
            first["paused"]) == ("cli_sched_nightly", "0 3 * * *", "Europe/Berlin",
                                 "latest", False)
    assert first["input"] == {"args": ["ada"], "kwargs": {}}
    last_tick = dt.datetime.fromisoformat(first["last_tick"])
    after = max(last_tick, dt.datetime.now(dt.UTC))
    assert dt.datetime.fromisoformat(first["next_tick"]) in {
        next_tick("0 3 * * *", "Europe/Berlin", after - dt.timedelta(seconds=30)),
        next_tick("0 3 * * *", "Europe/Berlin", after)}
    assert second["catchup"] == "none"
    table = run_cli(sched_db, "schedules", "list")
    assert table.code == 0
    for text in ("cli_sched_nightly", "quarterly", "0 3 * * *", "Europe/Berlin", "*/15"):
        assert text in table.out


def test_list_of_a_world_without_schedules(tmp_path: Path) -> None:
    path = str(tmp_path / "empty.db")
    run_async(_open_only, path)
    assert run_cli(path, "schedules", "list").out.strip() == "no schedules"
    assert run_cli(path, "schedules", "list", "--json").json() == {"schedules": []}


async def _open_only(path: str) -> None:
    world = create_world("sqlite", path=path)
    await world.open()
    await world.close()


def test_pause_resume_delete(sched_db: str) -> None:
    paused = run_cli(sched_db, "schedules", "pause", "quarterly", "--json")
    assert paused.code == 0, paused.err
    assert paused.json()["paused"] is True and paused.json()["next_tick"] is None
    listed = run_cli(sched_db, "schedules", "list", "--json").json()["schedules"]
    assert [s["paused"] for s in listed] == [False, True]
    resumed = run_cli(sched_db, "schedules", "resume", "quarterly")
    assert resumed.code == 0 and "schedule quarterly resumed; next tick" in resumed.out
    deleted = run_cli(sched_db, "schedules", "delete", "quarterly")
    assert deleted.code == 0 and "deleted" in deleted.out
    listed = run_cli(sched_db, "schedules", "list", "--json").json()["schedules"]
    assert [s["schedule_id"] for s in listed] == ["cli_sched_nightly"]


@pytest.mark.parametrize("action", ["pause", "resume", "delete", "trigger"])
def test_unknown_schedule_is_one_line_and_exit_1(sched_db: str, action: str) -> None:
    result = run_cli(sched_db, "schedules", action, "nope")
    assert result.code == 1
    assert result.err == "worldflow: schedule not found: nope\n"
    assert result.out == ""
    listed = run_cli(sched_db, "schedules", "list", "--json").json()["schedules"]
    assert len(listed) == 2  # nothing changed


def test_missing_schedule_id_is_bad_usage(sched_db: str) -> None:
    result = run_cli(sched_db, "schedules", "pause")
    assert result.code == 2 and "SCHEDULE_ID" in result.err


def test_trigger_starts_one_run_now_that_a_worker_runs(sched_db: str) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    result = run_cli(sched_db, "schedules", "trigger", "cli_sched_nightly", "--json")
    assert result.code == 0, result.err
    run_id = result.json()["run_id"]
    sid, _, stamp = run_id.partition("@")
    assert sid == "cli_sched_nightly" and stamp.endswith("Z")
    at = dt.datetime.fromisoformat(stamp)
    assert before <= at <= dt.datetime.now(dt.UTC)
    shown = run_cli(sched_db, "inspect", "runs", run_id, "--json").json()
    assert (shown["workflow_name"], shown["status"]) == ("cli_sched_nightly", "pending")
    status, output = run_async(_run_to_end, sched_db, run_id)
    assert status == "completed"
    assert output["who"] == "ada"
    assert dt.datetime.fromisoformat(output["scheduled_at"]) == at
