"""The engine's heartbeat renews the leases of its runs and stops the actor of a run
whose lease it no longer holds. Its renewal answers for the runs leased when it ran: a
run started here while it was under way is not in that answer, and its actor must not
be taken for one whose lease was lost (it would be stopped, and its step run again)."""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from worldflow import RunStatus, sleep, start, step, workflow

from ..conftest import make_world

if TYPE_CHECKING:
    from pathlib import Path

ran: collections.Counter[str] = collections.Counter()
release: dict[str, asyncio.Event] = {}


@step(name="hb_waits")
async def waits(key: str) -> str:
    ran[key] += 1
    await release[key].wait()
    return key


@workflow(name="hb_one_step")
async def one_step(key: str) -> str:
    return await waits(key)


class LateRenewal:
    """The world's lease renewal, one of which (the first once `armed` is set) reads
    the leases as they are, then answers only when `answer` is set, as a slow database
    would; `renewing` is set once it has read them."""

    def __init__(self, world: Any, *, armed: bool) -> None:
        self.armed, self.renewing, self.answer = (asyncio.Event(), asyncio.Event(),
                                                  asyncio.Event())
        if armed:
            self.armed.set()
        self._renew = world.renew_leases
        world.renew_leases = self.renew_leases

    async def renew_leases(self, owner: str, seconds: float) -> Any:
        held = await self._renew(owner, seconds)
        if self.armed.is_set() and not self.renewing.is_set():
            self.renewing.set()
            await self.answer.wait()
        return held


async def until_ran(key: str) -> None:
    for _ in range(200):
        if ran[key]:
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("world_name", ["memory", "sqlite", "postgres"])
async def test_a_run_started_during_a_renewal_keeps_its_actor(
        world_name: str, tmp_path: Path, request: pytest.FixtureRequest,
        caplog: pytest.LogCaptureFixture) -> None:
    world = make_world(world_name, tmp_path, request, lease_seconds=0.3)
    renewal = LateRenewal(world, armed=True)
    key = uuid.uuid4().hex
    release[key] = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="worldflow"):
        async with world:
            await asyncio.wait_for(renewal.renewing.wait(), 5)
            run = await start(one_step, key, world=world)  # while the renewal is out
            await until_ran(key)
            renewal.answer.set()
            await asyncio.sleep(0.35)  # that renewal answered; the next ones hold it
            release[key].set()
            assert await run.result(timeout=10) == key
    assert ran[key] == 1
    assert not [r for r in caplog.records if "lease lost" in r.getMessage()]


@workflow(name="hb_step_then_sleep")
async def step_then_sleep(key: str) -> str:
    await waits(key)
    await sleep(3600)
    return key


@pytest.mark.parametrize("world_name", ["memory", "sqlite", "postgres"])
async def test_a_run_set_aside_during_a_renewal_is_not_replayed(
        world_name: str, tmp_path: Path, request: pytest.FixtureRequest,
        caplog: pytest.LogCaptureFixture) -> None:
    """The renewal reads the run's lease; before it answers, the run's actor gives the
    run back (it sleeps for an hour) and goes. The answer still lists the run: that
    must not start an actor for a run this process no longer holds."""
    world = make_world(world_name, tmp_path, request, lease_seconds=0.3)
    renewal = LateRenewal(world, armed=False)
    key = uuid.uuid4().hex
    release[key] = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="worldflow"):
        async with world:
            run = await start(step_then_sleep, key, world=world)
            await until_ran(key)
            renewal.armed.set()
            await asyncio.wait_for(renewal.renewing.wait(), 5)  # it read the run's lease
            release[key].set()
            for _ in range(200):  # the run waits an hour: its actor gives it back
                if run.run_id not in world.engine.actors:
                    break
                await asyncio.sleep(0.01)
            assert run.run_id not in world.engine.actors
            renewal.answer.set()
            await asyncio.sleep(0.2)
            assert run.run_id not in world.engine.actors
            assert (await run.status()) is RunStatus.RUNNING
    assert ran[key] == 1
    assert not [r for r in caplog.records if "without an actor" in r.getMessage()]
