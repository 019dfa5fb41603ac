"""One corrupt row in workflow_runs (or workflow_steps) affects only its own run: the
list shows it as corrupt and every other run as usual, `get_run` raises
`CorruptRecordError` for it, `inspect runs` exits 0 and the web list answers 200.

Each test corrupts rows in a SQLite file or Postgres database of its own, so that no
other test ever reads them."""

from __future__ import annotations

import os
import sqlite3
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest

from tests.cli.helpers import run_async, run_cli
from worldflow import create_world, get_run, start, step, workflow
from worldflow.cli.web import app
from worldflow.errors import CorruptRecordError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

PG_ADMIN_URL = os.environ.get("WORLDFLOW_TEST_PG_ADMIN",
                              "postgresql://root@127.0.0.1:5432/postgres")
RUNS = ("cr-1", "cr-2", "cr-3")
BAD = "cr-2"
#: column -> a value worldflow never writes there (per world: Postgres types some)
CORRUPTIONS = {
    "sqlite": {"created_at": "'yesterday-ish'", "status": "'exploded'",
               "error": "'{not json'"},
    "postgres": {"status": "'exploded'", "error": """'{"nope": 1}'::json"""},
}


@workflow(name="cr_noop")
async def noop(i: int) -> int:
    return i


@step(name="cr_step")
async def cr_step() -> int:
    return 1


@workflow(name="cr_one_step")
async def one_step_flow() -> int:
    return await cr_step()


async def _create_runs(world: Any) -> None:
    await world.open()
    try:
        for i, run_id in enumerate(RUNS):
            await start(noop, i, world=world, run_id=run_id)
    finally:
        await world.close()


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def corrupt_pg_url() -> Iterator[str]:
    name = f"worldflow_corrupt_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    run_async(_admin, f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        run_async(_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


CASES = [(kind, column) for kind, columns in CORRUPTIONS.items() for column in columns]


@pytest.fixture(params=CASES, ids=[f"{k}-{c}" for k, c in CASES])
async def corrupted(request: pytest.FixtureRequest, tmp_path: Path
                    ) -> AsyncIterator[tuple[Any, str, dict[str, str]]]:
    """An opened world whose run `BAD` has one corrupt column; (world, kind, CLI args)."""
    kind, column = request.param
    update = f"UPDATE workflow_runs SET {column} = {CORRUPTIONS[kind][column]} WHERE id = $1"
    if kind == "sqlite":
        path = str(tmp_path / "corrupt.db")
        await _create_runs(create_world("sqlite", path=path))
        with sqlite3.connect(path) as conn:
            conn.execute(update.replace("$1", "?"), (BAD,))
        conn.close()
        world = create_world("sqlite", path=path)
        cli = {"--path": path}
    else:
        base = request.getfixturevalue("corrupt_pg_url")
        name = f"worldflow_corrupt_{uuid.uuid4().hex[:8]}"
        await _admin(f'CREATE DATABASE "{name}"')
        url = f"{base.rsplit('/', 1)[0]}/{name}"
        await _create_runs(create_world("postgres", connection_string=url))
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(update, BAD)
        finally:
            await conn.close()
        world = create_world("postgres", connection_string=url)
        cli = {"--url": url}
    await world.open()
    try:
        yield world, kind, cli
    finally:
        await world.close()
        if kind == "postgres":
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_corrupt_run_row_is_listed_as_corrupt_and_hides_no_other_run(
        corrupted: tuple[Any, str, dict[str, str]]) -> None:
    world, _, _ = corrupted
    page = await world.list_runs()
    by_id = {run.run_id: run for run in page.items}
    assert set(by_id) == set(RUNS)
    assert by_id[BAD].corrupt is not None and BAD in by_id[BAD].corrupt
    assert all(by_id[run_id].corrupt is None for run_id in RUNS if run_id != BAD)


async def test_get_run_of_a_corrupt_row_raises_corrupt_record_error(
        corrupted: tuple[Any, str, dict[str, str]]) -> None:
    world, _, _ = corrupted
    with pytest.raises(CorruptRecordError) as info:
        await world.get_run(BAD)
    assert info.value.run_id == BAD
    with pytest.raises(CorruptRecordError):
        await get_run(BAD, world=world)
    assert (await get_run("cr-1", world=world)).run_id == "cr-1"


async def test_inspect_runs_and_web_list_still_work_with_a_corrupt_row(
        corrupted: tuple[Any, str, dict[str, str]]) -> None:
    world, _, cli = corrupted
    args = [item for pair in cli.items() for item in pair]
    listed = await _in_thread(run_cli, None, "inspect", "runs", "--json", *args)
    assert listed.code == 0, listed.err
    statuses = {run["run_id"]: run["status"] for run in listed.json()["runs"]}
    assert statuses == {"cr-1": "pending", BAD: "corrupt", "cr-3": "pending"}
    table = await _in_thread(run_cli, None, "inspect", "runs", *args)
    assert table.code == 0 and "corrupt" in table.out and "cr-3" in table.out
    alone = await _in_thread(run_cli, None, "inspect", "runs", BAD, *args)
    assert alone.code == 1 and alone.err.count("\n") == 1 and BAD in alone.err
    transport = httpx.ASGITransport(app=app(world))
    async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
        page = await http.get("/")
        assert page.status_code == 200 and "corrupt" in page.text and "cr-3" in page.text
        api = await http.get("/api/runs")
        assert api.status_code == 200
        assert {r["run_id"]: r["status"] for r in api.json()["runs"]}[BAD] == "corrupt"


async def test_corrupt_step_row_raises_corrupt_record_error_and_spares_the_list(
        tmp_path: Path) -> None:
    path = str(tmp_path / "steps.db")
    async with create_world("sqlite", path=path) as started:
        await (await start(one_step_flow, world=started, run_id="cr-steps")).result(
            timeout=30)
        await (await start(one_step_flow, world=started, run_id="cr-steps-ok")).result(
            timeout=30)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE workflow_steps SET status = 'melted' "
                     "WHERE workflow_run_id = 'cr-steps'")
    conn.close()
    world = create_world("sqlite", path=path)
    await world.open()
    try:
        with pytest.raises(CorruptRecordError) as info:
            await world.list_steps("cr-steps")
        assert info.value.run_id == "cr-steps"
        assert len(await world.list_steps("cr-steps-ok")) == 1
    finally:
        await world.close()
    listed = await _in_thread(run_cli, None, "inspect", "runs", "--json", "--path", path)
    assert listed.code == 0, listed.err
    assert {r["run_id"] for r in listed.json()["runs"]} == {"cr-steps", "cr-steps-ok"}


async def _in_thread(fn: Any, *args: Any) -> Any:
    import anyio

    return await anyio.to_thread.run_sync(lambda: fn(*args))
