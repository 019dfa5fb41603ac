"""A payload refused by a typed hook shows in `inspect hooks`, `inspect events` and on
the run's web page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import httpx

from tests.cli.helpers import run_cli
from tests.contract.test_typed_hook_rejects import _until, wait_order
from worldflow import create_world, resume_hook, start
from worldflow.cli.web import app

if TYPE_CHECKING:
    from pathlib import Path

TOKEN = "cli-rejects-1"


async def test_rejected_payload_is_visible_in_cli_and_web(tmp_path: Path) -> None:
    path = str(tmp_path / "rejects.db")
    async with create_world("sqlite", path=path) as world:
        run = await start(wait_order, TOKEN, world=world, run_id="cli-rejects")
        await _until(lambda: world.get_hook(TOKEN))
        await resume_hook(TOKEN, {"sku": 5}, world=world)

        async def rejected() -> bool:
            return any(e.event_type == "hook_rejected"
                       for e in await world.list_events(run.run_id))

        await _until(rejected)
    hooks = await anyio.to_thread.run_sync(
        lambda: run_cli(path, "inspect", "hooks", "--json"))
    assert hooks.code == 0, hooks.err
    (hook,) = hooks.json()["hooks"]
    assert (hook["token"], hook["received"], hook["rejected"]) == (TOKEN, 0, 1)
    table = await anyio.to_thread.run_sync(lambda: run_cli(path, "inspect", "hooks"))
    assert "1 rejected" in table.out
    events = await anyio.to_thread.run_sync(
        lambda: run_cli(path, "inspect", "events", "cli-rejects"))
    assert "hook_rejected" in events.out and "ValidationError" in events.out
    world2: Any = create_world("sqlite", path=path)
    await world2.open()
    try:
        transport = httpx.ASGITransport(app=app(world2))
        async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
            page = await http.get("/runs/cli-rejects")
        assert page.status_code == 200
        assert "1 rejected" in page.text and "hook_rejected" in page.text
    finally:
        await world2.close()
