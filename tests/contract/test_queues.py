"""Named queues: concurrency, rate limits and priorities counted by the world."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from typing import Any

import pytest

from worldflow import Queue, gather, start, step, workflow

active: collections.Counter[str] = collections.Counter()
peaks: collections.Counter[str] = collections.Counter()
starts: dict[str, list[float]] = collections.defaultdict(list)

pair = Queue("q_pair", concurrency=2)
paced = Queue("q_paced", rate_limit=(3, "300ms"))
single_run = Queue("q_single_run", concurrency=1)


@step(name="q_pair_step", queue=pair)
async def pair_step(key: str, i: int) -> int:
    active[key] += 1
    peaks[key] = max(peaks[key], active[key])
    await asyncio.sleep(0.02)
    active[key] -= 1
    return i


@step(name="q_paced_step", queue="q_paced")
async def paced_step(key: str, i: int) -> int:
    starts[key].append(time.monotonic())
    return i


@workflow(name="q_fanout")
async def fanout(key: str, n: int, paced_steps: bool) -> list[int]:
    calls = [(paced_step if paced_steps else pair_step)(key, i) for i in range(n)]
    return await gather(*calls)


async def test_queue_concurrency_bounds_steps_running_at_once(world: Any) -> None:
    key = uuid.uuid4().hex
    runs = [await start(fanout, key, 6, False, world=world) for _ in range(2)]
    for run in runs:
        assert await run.result(timeout=30) == list(range(6))
    assert peaks[key] == 2


async def test_queue_rate_limit_bounds_starts_per_window(world: Any) -> None:
    key = uuid.uuid4().hex
    run = await start(fanout, key, 9, True, world=world)
    assert await run.result(timeout=30) == list(range(9))
    times = sorted(starts[key])
    assert len(times) == 9
    # any 4 consecutive starts span at least the period (the limit counts grants; a body
    # starts a commit and a scheduling delay after its grant, which on a busy machine
    # differ from one body to the next by tens of milliseconds; without the limit all 9
    # would start within a few)
    for i in range(len(times) - 3):
        assert times[i + 3] - times[i] >= 0.3 - 0.1
    assert times[-1] - times[0] >= 0.6 - 0.1


@step(name="q_run_body")
async def run_body(key: str) -> None:
    active[key] += 1
    peaks[key] = max(peaks[key], active[key])
    await asyncio.sleep(0.03)
    active[key] -= 1


@workflow(name="q_run_wf")
async def run_wf(key: str) -> str:
    await run_body(key)
    return "ok"


async def test_runs_started_on_a_queue_respect_its_concurrency(world: Any) -> None:
    key = uuid.uuid4().hex
    runs = [await start(run_wf, key, world=world, queue=single_run) for _ in range(4)]
    assert [await r.result(timeout=30) for r in runs] == ["ok"] * 4
    assert peaks[key] == 1
    assert (await world.get_run(runs[0].run_id)).queue == "q_single_run"


async def test_higher_priority_waiter_gets_the_next_slot(storage: Any) -> None:
    q = f"prio-{uuid.uuid4().hex}"
    common = {"concurrency": 1, "rate_limit": None, "lease_seconds": 30.0}
    assert await storage.acquire_slot(q, "holder", priority=0, **common) is None
    assert await storage.acquire_slot(q, "low", priority=0, **common) is not None
    assert await storage.acquire_slot(q, "high", priority=5, **common) is not None
    await storage.release_slot(q, "holder")
    assert await storage.acquire_slot(q, "low", priority=0, **common) is not None
    assert await storage.acquire_slot(q, "high", priority=5, **common) is None
    await storage.release_slot(q, "high")
    assert await storage.acquire_slot(q, "low", priority=0, **common) is None


@pytest.mark.parametrize(("options", "message"), [
    ({"concurrency": 0}, "concurrency must be a positive integer"),
    ({"concurrency": -1}, "concurrency must be a positive integer"),
    ({"rate_limit": (0, "1s")}, "rate_limit count"),
    ({"rate_limit": (5, "soon")}, "rate_limit period"),
    ({"rate_limit": 5}, r"rate_limit must be \(count, period\)"),
    ({"priority": "high"}, "priority must be an integer"),
])
def test_bad_queue_options_are_clear_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Queue(f"bad-{uuid.uuid4().hex}", **options)


def test_unknown_queue_name_is_an_error_at_decoration() -> None:
    with pytest.raises(ValueError, match="unknown queue 'nope'"):
        @step(name="q_unknown", queue="nope")
        async def unknown() -> None: ...


async def test_unknown_queue_name_is_an_error_at_start(memory_world: Any) -> None:
    with pytest.raises(ValueError, match="unknown queue 'nope'"):
        await start(run_wf, "x", world=memory_world, queue="nope")
    assert (await memory_world.list_runs()).items == []
