"""A run that cannot make progress never turns into a hot loop, and a cancel still ends
it at once: an actor that keeps failing is retried with exponential backoff (hook
payloads do not cut it short), and a run whose workflow no worker has is cancelled
without its code."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from worldflow import RunCancelledError, create_hook, resume_hook, start, workflow
from worldflow.core.actor import RunActor
from worldflow.core.records import NewRun, RunStatus

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@workflow(name="hl_waits")
async def waits_for_input() -> Any:
    hook = create_hook(token=None)
    return await hook


async def wait_for_hook(world: Any, run_id: str) -> str:
    for _ in range(500):
        hooks = await world.list_hooks(run_id)
        if hooks and run_id not in world.engine.actors:
            return str(hooks[0].token)
        await asyncio.sleep(0.01)
    raise AssertionError("the run never waited on its hook")


class Failures(list[str]):
    armed = False


@pytest.fixture
def failing_replays(monkeypatch: pytest.MonkeyPatch) -> Failures:
    """Once armed, every replay of a run fails (as if the actor hit a bug); records
    each failure."""
    failures = Failures()
    original = RunActor._resume_after_replay

    async def broken(self: RunActor) -> None:
        if failures.armed and self.run_id.startswith("hl-"):
            failures.append(self.run_id)
            raise RuntimeError("injected actor failure")
        await original(self)

    monkeypatch.setattr(RunActor, "_resume_after_replay", broken)
    return failures


async def test_an_actor_that_keeps_failing_backs_off_and_a_cancel_ends_it_at_once(
        world: Any, failing_replays: Failures, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="worldflow")
    world.engine.keep_alive = 0.0  # the run is evicted while it waits for its hook
    world.engine.crash_retry_delay = 0.05
    run = await start(waits_for_input, world=world, run_id=f"hl-{world.name}-backoff")
    token = await wait_for_hook(world, run.run_id)
    failing_replays.armed = True
    await resume_hook(token, {"n": 1}, world=world)  # wakes it: every replay now fails
    await asyncio.sleep(2.0)
    # 0.05 s doubling: at most ~6 failures in 2 s (a fixed delay would be ~40)
    assert 1 <= len(failing_replays) <= 7, failing_replays
    # more input does not cut the backoff short
    before = len(failing_replays)
    for n in range(20):
        await resume_hook(token, {"n": n}, world=world)
    await asyncio.sleep(0.3)
    assert len(failing_replays) <= before + 1
    assert await run.status() == RunStatus.RUNNING
    # the next backoff is seconds away, but a cancel ends the run now
    world.engine.crash_retry_delay = 30.0
    assert await run.cancel()
    with pytest.raises(RunCancelledError):
        await run.result(timeout=5)
    hooks = await world.list_hooks(run.run_id)
    assert [h.status for h in hooks] == ["disposed"]


async def test_a_run_of_a_workflow_no_worker_has_is_cancelled_at_once(world: Any) -> None:
    run_id = f"hl-{world.name}-codeless"
    _, created = await world.create_run(
        NewRun(run_id, "hl_nobody_has_this_workflow", b'{"args":[],"kwargs":{}}',
               world.now()), lease_owner=None, lease_seconds=world.lease_seconds)
    assert created
    await asyncio.sleep(0.2)  # nobody claims it: no worker has its code
    assert (await world.get_run(run_id)).status == RunStatus.PENDING
    assert await world.request_cancel(run_id)
    ended = await world.wait_run_finished(run_id, timeout=5)
    assert ended.status == RunStatus.CANCELLED
    types = [e.event_type for e in await world.list_events(run_id)]
    assert types == ["run_created", "run_cancelled"]
