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


@pytest.mark.parametrize("world_name", ["memory", "sqlite", "postgres"])
async def test_a_run_started_during_a_renewal_keeps_its_actor(
        world_name: str, tmp_path: Path, request: pytest.FixtureRequest,
        caplog: pytest.LogCaptureFixture) -> None:
    world = make_world(world_name, tmp_path, request, lease_seconds=0.3)
    renewing, answer = asyncio.Event(), asyncio.Event()
    real = world.renew_leases

    async def slow_renewal(owner: str, seconds: float) -> Any:
        held = await real(owner, seconds)  # the leases as they are now...
        renewing.set()
        await answer.wait()  # ...answered later, as a slow database would
        return held

    world.renew_leases = slow_renewal
    key = uuid.uuid4().hex
    release[key] = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="worldflow"):
        async with world:
            await asyncio.wait_for(renewing.wait(), 5)
            run = await start(one_step, key, world=world)  # while the renewal is out
            for _ in range(100):
                if ran[key]:
                    break
                await asyncio.sleep(0.01)
            answer.set()
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
    armed, renewing, answer = asyncio.Event(), asyncio.Event(), asyncio.Event()
    real = world.renew_leases

    async def slow_renewal(owner: str, seconds: float) -> Any:
        held = await real(owner, seconds)
        if armed.is_set() and not renewing.is_set():
            renewing.set()
            await answer.wait()
        return held

    world.renew_leases = slow_renewal
    key = uuid.uuid4().hex
    release[key] = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="worldflow"):
        async with world:
            run = await start(step_then_sleep, key, world=world)
            for _ in range(200):
                if ran[key]:
                    break
                await asyncio.sleep(0.01)
            armed.set()
            await asyncio.wait_for(renewing.wait(), 5)  # it has read the run's lease
            release[key].set()
            for _ in range(200):  # the run waits an hour: its actor gives it back
                if run.run_id not in world.engine.actors:
                    break
                await asyncio.sleep(0.01)
            assert run.run_id not in world.engine.actors
            answer.set()
            await asyncio.sleep(0.2)
            assert run.run_id not in world.engine.actors
            assert (await run.status()) is RunStatus.RUNNING
    assert ran[key] == 1
    assert not [r for r in caplog.records if "without an actor" in r.getMessage()]
