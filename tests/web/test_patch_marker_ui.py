"""A run whose log holds a `patch_marker` event shows it in the web UI and `inspect`."""

from __future__ import annotations

import httpx

from worldflow import create_world, patched, start, step, workflow
from worldflow.cli import shapes
from worldflow.cli.inspect import event_details
from worldflow.cli.web import app
from worldflow.cli.web.timeline import build_timeline


@step(name="ui_patch_greet")
async def greet(name: str) -> str:
    return f"hello {name}"


@workflow(name="ui_patch_hello")
async def hello(name: str) -> str:
    first = await greet(name)
    return first.upper() if patched("shout") else first


async def test_the_run_page_and_event_listing_show_the_patch_marker() -> None:
    async with create_world("memory") as world:
        run = await start(hello, "ada", world=world)
        assert await run.result(timeout=30) == "HELLO ADA"
        events = await world.list_events(run.run_id)
        marker = next(e for e in events if e.event_type == "patch_marker")
        assert event_details(shapes.event_dict(marker)) == 'change_id "shout"'
        record = await world.get_run(run.run_id)
        assert [row.label for row in build_timeline(record, events, world.now()).rows] == [
            "ui_patch_greet #1"]
        transport = httpx.ASGITransport(app=app(world))
        async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
            page = await http.get(f"/runs/{run.run_id}")
            assert page.status_code == 200
            assert "patch_marker" in page.text and "shout" in page.text
            api = (await http.get(f"/api/runs/{run.run_id}/events")).json()
            types = [e["type"] for e in (api["events"] if isinstance(api, dict) else api)]
            assert "patch_marker" in types
