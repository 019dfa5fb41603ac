"""`inspect runs RUN_ID` and the web UI's run page name a run's parent and children."""

from __future__ import annotations

from typing import Any

from tests.contract.test_children import parent
from worldflow import start
from worldflow.cli import shapes


async def test_run_detail_links_parent_and_children(memory_world: Any) -> None:
    run = await start(parent, 1, world=memory_world)
    await run.result(timeout=30)
    child_id = f"{run.run_id}:2"
    top = await memory_world.get_run(run.run_id)
    detail = shapes.run_detail(top, await memory_world.list_steps(run.run_id),
                               await memory_world.list_events(run.run_id))
    assert detail["parent_run_id"] is None
    assert detail["children"] == [{"run_id": child_id, "workflow_name": "c_child"}]
    child = await memory_world.get_run(child_id)
    child_detail = shapes.run_detail(child, [], await memory_world.list_events(child_id))
    assert child_detail["parent_run_id"] == run.run_id
    assert child_detail["children"] == []
