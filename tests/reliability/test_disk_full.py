"""SQLite "disk full" in the middle of a load, then room again.

The test caps the database with `PRAGMA max_page_count` on the world's writer connection
(the only connection that writes), a few pages above its size, while 40 runs of a few
steps go through. Writes then fail with SQLITE_FULL ("database or disk is full").

What the engine does (asserted here, except where marked "seen in the logs"):

- a refused write stores nothing (its savepoint is rolled back, or the whole batch when
  SQLite rolled back the transaction), and each caller gets a `WorldError` naming the
  database file, saying it is full and that nothing of the write was stored;
- the actor of a run whose append failed stops, and the engine replays the run later
  with an exponential backoff (`crash_retry_delay`, doubling): no hot crash loop (a few
  refused appends per waiting run, not thousands). A lease that cannot be renewed or
  released while the disk is full expires (`lease_seconds=2` here) and the run is
  claimed again (seen in the logs);
- no run fails because of it: runs wait. Each run's log stays whole (seqs contiguous,
  one `step_completed` per step);
- once the limit is raised, every run completes with the right result, and no step whose
  completion was committed runs again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any

import pytest

from worldflow import create_world, get_step_metadata, start, step, workflow
from worldflow.core.records import step_id_for
from worldflow.errors import WorldError

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow

RUNS = 40

committed: set[str] = set()  # step ids whose step_completed is stored
reruns_after_commit: list[str] = []
append_errors: list[str] = []


@step(name="df_work", max_retries=10, backoff="20ms")
async def work(run_no: int, i: int) -> str:
    step_id = get_step_metadata().step_id
    if step_id in committed:
        reruns_after_commit.append(step_id)
    await asyncio.sleep(0.2)  # 40 runs at 20 at once: the load lasts a few seconds
    return f"{run_no}-{i}-" + "x" * 2000  # big results fill pages quickly


@workflow(name="df_flow")
async def df_flow(run_no: int) -> int:
    total = 0
    for i in range(4):
        total += len(await work(run_no, i))
    return total + run_no


def expected(run_no: int) -> int:
    return sum(len(f"{run_no}-{i}-") + 2000 for i in range(4)) + run_no


def watch_appends(world: Any) -> None:
    original = world.append_events

    async def watched(run_id: str, records: Any, **kwargs: Any) -> Any:
        try:
            result = await original(run_id, records, **kwargs)
        except WorldError as exc:
            append_errors.append(str(exc))
            raise
        if kwargs.get("wait", True):
            committed.update(step_id_for(run_id, r.correlation_id) for r in records
                             if r.event_type == "step_completed")
        return result

    world.append_events = watched


async def set_max_pages(world: Any, pages: int) -> int:
    """Cap (or uncap) the database on the writer connection; return its size in pages."""
    conn = world._write_conn
    await conn.execute(f"PRAGMA max_page_count = {int(pages)}")
    async with conn.execute("PRAGMA page_count") as cursor:
        row = await cursor.fetchone()
    return int(row[0])


async def test_disk_full_makes_runs_wait_and_they_complete_once_there_is_room(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="worldflow")
    path = tmp_path / "full.db"
    world = create_world("sqlite", path=str(path), queue_concurrency=20, lease_seconds=2)
    try:
        async with world:
            world.engine.crash_retry_delay = 0.05
            watch_appends(world)
            runs = [await start(df_flow, n, world=world) for n in range(RUNS)]
            await asyncio.sleep(1.0)  # the first runs complete
            size = await set_max_pages(world, 10**9)
            await set_max_pages(world, size + 8)  # room for a few steps only
            await asyncio.sleep(3.0)
            full_errors = [e for e in append_errors if "full" in e]
            assert full_errors, append_errors
            assert str(path) in full_errors[0]
            assert "nothing of this write was stored; free space" in full_errors[0]
            statuses = collections.Counter(
                [(await world.get_run(r.run_id)).status for r in runs])
            assert statuses.get("failed", 0) == 0, statuses
            assert statuses.get("completed", 0) < RUNS  # the rest wait for room
            stuck = RUNS - statuses.get("completed", 0)
            errors_while_full = len(append_errors)

            await set_max_pages(world, 1_073_741_823)  # room again
            results = await asyncio.gather(*(r.result(timeout=120) for r in runs))
            assert results == [expected(n) for n in range(RUNS)]
            for run in runs:
                events = await world.list_events(run.run_id)
                assert [e.seq for e in events] == list(range(len(events)))
                completions = collections.Counter(
                    e.correlation_id for e in events if e.event_type == "step_completed")
                assert len(completions) == 4 and set(completions.values()) == {1}
        assert reruns_after_commit == []
        # backoff, not a hot loop: a few failed appends per waiting run, not thousands
        assert errors_while_full < 40 * stuck, errors_while_full
        print(f"\ndisk full: {stuck} of {RUNS} runs waited; {errors_while_full} appends "
              f"refused ({len(full_errors)} saying full) in 3 s; all completed after")
    finally:
        committed.clear()
        reruns_after_commit.clear()
        append_errors.clear()
