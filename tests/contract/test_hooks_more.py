"""Typed hooks, and a hook raced against a durable timeout that replays the same way."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
import pytest

from worldflow import define_hook, start, workflow


class Approval(msgspec.Struct):
    approver: str
    approved: bool


ApprovalHook = define_hook(Approval)


@workflow(name="h_typed")
async def typed(token: str) -> list[Any]:
    hook = ApprovalHook.create(token)
    first = await hook
    return [type(first).__name__, first.approver, first.approved]


async def wait_hook(world: Any, token: str) -> None:
    for _ in range(500):
        if await world.get_hook(token) is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("hook never created")


async def test_typed_hook_validates_before_delivering(world: Any) -> None:
    token = f"typed-{uuid.uuid4().hex}"
    run = await start(typed, token, world=world)
    await wait_hook(world, token)
    before = await world.list_events(run.run_id)
    with pytest.raises(msgspec.ValidationError):
        await ApprovalHook.resume(token, {"approver": "ann"}, world=world)
    with pytest.raises(msgspec.ValidationError):
        await ApprovalHook.resume(token, {"approver": 5, "approved": True}, world=world)
    assert await world.read_inbox(run.run_id) == []
    assert await world.list_events(run.run_id) == before  # the run untouched
    await ApprovalHook.resume(token, Approval("bob", True), world=world)
    assert await run.result(timeout=30) == ["Approval", "bob", True]


@workflow(name="h_race")
async def race(token: str, timeout: float) -> str:
    hook = ApprovalHook.create(token)
    try:
        answer = await asyncio.wait_for(hook, timeout=timeout)
    except TimeoutError:
        return "timed out"
    return f"answered by {answer.approver}"


@pytest.mark.parametrize("answer", [True, False], ids=["answered", "timed-out"])
async def test_hook_with_a_timeout_resolves_the_same_way_on_replay(
        world: Any, answer: bool) -> None:
    world.engine.keep_alive = 0.0  # the run is evicted while it waits, then replayed
    token = f"race-{uuid.uuid4().hex}"
    run = await start(race, token, 0.6, world=world)
    await wait_hook(world, token)
    if answer:
        await ApprovalHook.resume(token, Approval("cy", True), world=world)
    expected = "answered by cy" if answer else "timed out"
    assert await run.result(timeout=30) == expected
    # the answer (or the timeout) reached a run replayed after eviction; the log agrees
    events = await world.list_events(run.run_id)
    kinds = [e.event_type for e in events]
    assert ("hook_received" in kinds) is answer
    assert ("wait_completed" in kinds) is not answer
    assert kinds[-1] == "run_completed"
