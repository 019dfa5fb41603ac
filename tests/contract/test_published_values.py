"""Published values: set_event in a workflow, get_event from outside, on every world."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from worldflow import (
    NotInWorkflowError,
    RunNotFoundError,
    get_event,
    receive,
    set_event,
    start,
    workflow,
)


@workflow(name="p_progress")
async def progress() -> str:
    set_event("stage", "started")
    await asyncio.sleep(0.2)  # evicted here (keep_alive 0), replayed on waking
    set_event("stage", {"n": 2})
    set_event("other", [1, 2])
    await receive()
    set_event("stage", "done")
    return "ok"


async def test_get_event_waits_for_the_value_and_the_last_one_wins(world: Any) -> None:
    world.engine.keep_alive = 0.0
    run = await start(progress, world=world)
    first = await get_event(run.run_id, "stage", timeout=30, world=world)
    assert first in ("started", {"n": 2})
    for _ in range(1000):
        if await get_event(run.run_id, "other", timeout=0, world=world) == [1, 2]:
            break
        await asyncio.sleep(0.01)
    assert await get_event(run.run_id, "stage", timeout=0, world=world) == {"n": 2}
    assert await get_event(run.run_id, "missing", timeout=0.2, world=world) is None
    await asyncio.gather(asyncio.create_task(_send_later(world, run.run_id)),
                         run.result(timeout=30))
    assert await get_event(run.run_id, "stage", world=world) == "done"
    assert await get_event(run.run_id, "missing", world=world) is None  # ended without it
    published = [e.event for e in await world.list_events(run.run_id)
                 if e.event_type == "value_published"]
    assert [(e.key, bytes(e.value)) for e in published] == [
        ("stage", b'"started"'), ("stage", b'{"n":2}'), ("other", b"[1,2]"),
        ("stage", b'"done"')]


async def _send_later(world: Any, run_id: str) -> None:
    from worldflow import send

    await asyncio.sleep(0.05)
    await send(run_id, "go", world=world)


async def test_get_event_errors(world: Any) -> None:
    with pytest.raises(RunNotFoundError):
        await get_event("no-such-run", "k", world=world)
    with pytest.raises(NotInWorkflowError):
        set_event("k", 1)
