"""Storage faults under the engine: a write that fails before or after it is stored.

The engine must carry every run to its end, with no duplicate record and no completed
step run again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import pytest

from worldflow import get_step_metadata, start, step, workflow
from worldflow.core.records import step_id_for
from worldflow.errors import WorldError

body_runs: collections.Counter[tuple[int, int]] = collections.Counter()
committed: set[str] = set()  # step ids whose completion is stored
reruns_after_commit: list[str] = []


@step(name="sf_work", max_retries=5, backoff="10ms")
async def work(run_no: int, i: int) -> int:
    body_runs[(run_no, i)] += 1
    step_id = get_step_metadata().step_id
    if step_id in committed:
        reruns_after_commit.append(step_id)
    return run_no * 100 + i


@workflow(name="sf_flow")
async def flow(run_no: int) -> int:
    first = await asyncio.gather(work(run_no, 0), work(run_no, 1))
    rest = [await work(run_no, i) for i in range(2, 5)]
    return sum(first) + sum(rest)


def inject_faults(world: Any, every: int, after_write: bool) -> list[int]:
    original = world.append_events
    calls = [0, 0]  # appends, faults

    def stored(run_id: str, records: Any) -> None:
        committed.update(step_id_for(run_id, r.correlation_id) for r in records
                         if r.event_type == "step_completed")

    async def faulty(run_id: str, records: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] % every == 0 and records:
            calls[1] += 1
            if after_write:  # stored, but the caller hears of an error
                kwargs["wait"] = True
                await original(run_id, records, **kwargs)
                stored(run_id, records)
            raise WorldError("injected fault: connection dropped")
        kwargs["wait"] = True
        await original(run_id, records, **kwargs)
        stored(run_id, records)

    world.append_events = faulty
    return calls


@pytest.mark.parametrize("after_write", [False, True], ids=["before-write", "after-write"])
async def test_runs_survive_failed_writes_without_duplicates(
        world: Any, after_write: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="worldflow")
    world.engine.crash_retry_delay = 0.01
    offset = 1000 if after_write else 0
    calls = inject_faults(world, 7, after_write)
    runs = [await start(flow, offset + n, world=world) for n in range(20)]
    results = await asyncio.gather(*(r.result(timeout=60) for r in runs))
    assert results == [5 * (offset + n) * 100 + 10 for n in range(20)]
    assert calls[1] > 0
    for run in runs:
        events = await world.list_events(run.run_id)
        assert [e.seq for e in events] == list(range(len(events)))
        completed = [e.correlation_id for e in events if e.event_type == "step_completed"]
        assert len(completed) == len(set(completed)) == 5
    assert all(body_runs[(offset + n, i)] >= 1 for n in range(20) for i in range(5))
    assert reruns_after_commit == []  # a stored completion is never run again
