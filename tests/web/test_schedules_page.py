"""The web UI's Schedules page (read-only), linked from the runs page header."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from worldflow import create_schedule, create_world, pause_schedule, workflow
from worldflow.cli.web import app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@workflow(name="web_sched_job")
async def job(n: int = 0) -> int:
    return n


@pytest.fixture(params=["memory", "sqlite"])
async def sched_client(request: pytest.FixtureRequest,
                       tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    options: dict[str, Any] = {} if request.param == "memory" else {
        "path": str(tmp_path / "ui.db")}
    world = create_world(request.param, **options)
    await world.open()  # storage only, as the CLI opens it
    try:
        await create_schedule(job, cron="0 3 * * *", schedule_id="nightly", args=(1,),
                              timezone="Europe/Berlin", world=world)
        await create_schedule(job, cron="*/5 * * * *", schedule_id="often", world=world)
        await pause_schedule("often", world=world)
        transport = httpx.ASGITransport(app=app(world))
        async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
            yield http
    finally:
        await world.close()


async def test_schedules_page_lists_each_schedule(sched_client: httpx.AsyncClient) -> None:
    response = await sched_client.get("/schedules")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    text = response.text
    assert text.index('data-schedule="nightly"') < text.index('data-schedule="often"')
    assert '<tr data-schedule="often" data-paused="true">' in text
    assert '<tr data-schedule="nightly">' in text
    for shown in ("<code>0 3 * * *</code>", "Europe/Berlin", "<code>*/5 * * * *</code>",
                  "web_sched_job", 'href="http://ui.test/?workflow=web_sched_job"'):
        assert shown in text


async def test_runs_page_header_links_to_schedules(sched_client: httpx.AsyncClient) -> None:
    runs = await sched_client.get("/")
    assert 'id="schedules-link" href="http://ui.test/schedules"' in runs.text


async def test_schedules_api_gives_the_cli_shape(sched_client: httpx.AsyncClient) -> None:
    document = (await sched_client.get("/api/schedules")).json()
    by_id = {s["schedule_id"]: s for s in document["schedules"]}
    assert set(by_id) == {"nightly", "often"}
    assert by_id["often"]["paused"] is True and by_id["often"]["next_tick"] is None
    assert by_id["nightly"]["next_tick"] is not None
    assert by_id["nightly"]["input"] == {"args": [1], "kwargs": {}}


async def test_schedules_page_of_a_world_without_schedules() -> None:
    async with create_world("memory") as world:
        transport = httpx.ASGITransport(app=app(world))
        async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
            response = await http.get("/schedules")
    assert response.status_code == 200 and "no schedules" in response.text
