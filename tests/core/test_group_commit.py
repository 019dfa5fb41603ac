"""The group-commit queue (worlds/batching.py) on its own: what goes into each batch,
when callers resume, and what holds across failures and close."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from worldflow.errors import LeaseLostError, WorldError
from worldflow.worlds.batching import (
    HOLD,
    SPLIT_MIN,
    BatchResult,
    Committed,
    Failed,
    Fences,
    GroupCommitQueue,
    QueuedWrite,
)


class Recorder:
    """A commit function that records each batch and the order of events around it."""

    def __init__(self, delay: float = 0.0, fail: set[str] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.log: list[str] = []
        self.delay = delay
        self.fail = fail or set()

    async def commit(self, batch: list[QueuedWrite[str]], fences: Fences) -> BatchResult:
        names = [w.request for w in batch]
        self.batches.append(names)
        self.log.append(f"commit {','.join(names)}")
        if self.delay:
            await asyncio.sleep(self.delay)
        outcomes = []
        for write in batch:
            fenced = fences.check(write)
            if fenced is not None:
                outcomes.append(Failed(fenced))
            elif write.request in self.fail:
                error = WorldError(f"{write.request} refused")
                fences.poison(write, error)
                outcomes.append(Failed(error))
            else:
                outcomes.append(Committed(write.request.upper()))
        return BatchResult(outcomes, committed=True)


def make_queue(recorder: Recorder, **options: Any) -> GroupCommitQueue[str]:
    options.setdefault("max_batch", 100)
    return GroupCommitQueue(recorder.commit, name="test-writer", closed_message="closed",
                            **options)


async def test_a_write_returns_its_result_after_its_commit() -> None:
    recorder = Recorder()
    queue = make_queue(recorder)
    queue.start()
    assert await queue.write("a") == "A"
    assert recorder.batches == [["a"]]
    await queue.close()


async def test_writes_queued_together_share_one_commit_in_order() -> None:
    recorder = Recorder()
    queue = make_queue(recorder)
    queue.start()
    results = await asyncio.gather(*(queue.write(f"w{i}") for i in range(10)))
    assert results == [f"W{i}" for i in range(10)]
    assert recorder.batches == [[f"w{i}" for i in range(10)]]
    assert (queue.commits, queue.writes) == (1, 10)
    await queue.close()


async def test_an_unawaited_write_waits_for_the_awaited_one_that_follows() -> None:
    recorder = Recorder()
    queue = make_queue(recorder, linger=0.5)
    queue.start()
    queue.write_nowait("started")
    await asyncio.sleep(0.01)
    assert recorder.batches == []  # lingering, not sent alone
    t0 = time.perf_counter()
    assert await queue.write("completed") == "COMPLETED"
    assert time.perf_counter() - t0 < 0.25  # the awaited write did not wait the linger out
    assert recorder.batches == [["started", "completed"]]
    await queue.close()


async def test_an_unawaited_write_alone_goes_when_the_linger_is_over() -> None:
    recorder = Recorder()
    queue = make_queue(recorder, linger=0.02)
    queue.start()
    queue.write_nowait("alone")
    for _ in range(100):
        if recorder.batches:
            break
        await asyncio.sleep(0.01)
    assert recorder.batches == [["alone"]]
    await queue.close()


async def test_a_big_batch_resumes_in_two_halves_around_the_next_commit() -> None:
    """The first half's next writes are on their way before the second half resumes."""
    recorder = Recorder(delay=0.001)
    queue = make_queue(recorder, linger=0.002)
    queue.start()
    n = 2 * SPLIT_MIN

    async def caller(i: int) -> None:
        await queue.write(f"a{i}")
        recorder.log.append(f"resumed {i}")
        await queue.write(f"b{i}")

    await asyncio.gather(*(caller(i) for i in range(n)))
    assert recorder.batches[0] == [f"a{i}" for i in range(n)]
    # the first half resumed, and their next writes went out as one batch, before any
    # caller of the second half resumed
    second_commit = recorder.log.index(f"commit {','.join(f'b{i}' for i in range(n // 2))}")
    resumed = [line for line in recorder.log[:second_commit] if line.startswith("resumed")]
    assert resumed == [f"resumed {i}" for i in range(n // 2)]
    assert sorted(w for b in recorder.batches for w in b) == sorted(
        [f"a{i}" for i in range(n)] + [f"b{i}" for i in range(n)])
    await queue.close()


async def test_a_held_half_resumes_after_the_hold_when_nothing_else_is_written() -> None:
    recorder = Recorder()
    queue = make_queue(recorder, linger=0.002)
    queue.start()
    t0 = time.perf_counter()
    results = await asyncio.gather(*(queue.write(f"w{i}") for i in range(2 * SPLIT_MIN)))
    assert results == [f"W{i}" for i in range(2 * SPLIT_MIN)]
    assert time.perf_counter() - t0 < 1.0
    assert HOLD <= 0.01
    await queue.close()


async def test_without_overlap_every_caller_resumes_at_its_commit() -> None:
    recorder = Recorder(delay=0.001)
    queue = make_queue(recorder, linger=0.002, overlap=False)
    queue.start()
    n = 2 * SPLIT_MIN

    async def caller(i: int) -> None:
        await queue.write(f"a{i}")
        await queue.write(f"b{i}")

    await asyncio.gather(*(caller(i) for i in range(n)))
    assert recorder.batches == [[f"a{i}" for i in range(n)], [f"b{i}" for i in range(n)]]
    await queue.close()


async def test_a_failed_unawaited_write_fences_the_next_write_of_its_run() -> None:
    recorder = Recorder(fail={"lost"})
    queue = make_queue(recorder, linger=0.002)
    queue.start()
    queue.write_nowait("lost", fence="run-1")
    with pytest.raises(LeaseLostError, match="lost refused"):  # in the same batch
        await queue.write("after", fence="run-1")
    queue.write_nowait("lost", fence="run-2")
    await asyncio.sleep(0.05)  # committed (and failed) alone
    with pytest.raises(LeaseLostError, match="earlier append failed"):
        await queue.write("later", fence="run-2")
    assert ["later"] not in recorder.batches  # never sent
    assert await queue.write("other", fence="run-3") == "OTHER"
    await queue.close()


async def test_close_commits_what_is_queued_and_refuses_more() -> None:
    recorder = Recorder(delay=0.005)
    queue = make_queue(recorder, linger=1.0)
    queue.start()
    queue.write_nowait("queued")
    pending = asyncio.ensure_future(queue.write("awaited"))
    await asyncio.sleep(0)
    await queue.close()
    assert await pending == "AWAITED"
    assert [w for b in recorder.batches for w in b] == ["queued", "awaited"]
    with pytest.raises(WorldError, match="closed"):
        queue.write_nowait("late")


async def test_a_batch_holds_at_most_max_batch_writes() -> None:
    recorder = Recorder()
    queue = make_queue(recorder, max_batch=4)
    queue.start()
    await asyncio.gather(*(queue.write(f"w{i}") for i in range(10)))
    assert [len(b) for b in recorder.batches] == [4, 4, 2]
    assert [w for b in recorder.batches for w in b] == [f"w{i}" for i in range(10)]
    await queue.close()


async def test_a_commit_function_that_raises_fails_its_batch_and_the_writer_goes_on() -> None:
    calls = 0

    async def commit(batch: list[QueuedWrite[str]], fences: Fences) -> BatchResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return BatchResult([Committed(w.request) for w in batch], committed=True)

    queue: GroupCommitQueue[str] = GroupCommitQueue(commit, name="t", closed_message="c",
                                                    max_batch=10)
    queue.start()
    with pytest.raises(WorldError, match="boom"):
        await queue.write("first")
    assert await queue.write("second") == "second"
    await queue.close()


async def test_a_close_that_times_out_leaves_no_caller_waiting() -> None:
    """The writer is stopped at the close timeout in the middle of a commit: the caller
    of the write in flight and of a write still queued get an error, not a hang."""
    recorder = Recorder(delay=30)
    queue = make_queue(recorder, close_timeout=0.1)
    queue.start()
    in_flight = asyncio.ensure_future(queue.write("slow"))
    await asyncio.sleep(0.01)
    queued = asyncio.ensure_future(queue.write("queued"))
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    await queue.close()
    for pending in (in_flight, queued):
        with pytest.raises(WorldError, match="not committed, or its commit was not confirmed"):
            await asyncio.wait_for(pending, 1)
    assert time.perf_counter() - t0 < 1


# -- a write committed alone, in its caller's task (lead=True) -------------------------
class TaskRecorder(Recorder):
    """Records which task ran each commit, and fails if two commits overlap."""

    def __init__(self, delay: float = 0.0, fail: set[str] | None = None) -> None:
        super().__init__(delay, fail)
        self.tasks: list[asyncio.Task[Any] | None] = []
        self.running = False

    async def commit(self, batch: list[QueuedWrite[str]], fences: Fences) -> BatchResult:
        assert not self.running, "two commits at once"
        self.running = True
        self.tasks.append(asyncio.current_task())
        try:
            return await super().commit(batch, fences)
        finally:
            self.running = False


async def started(queue: GroupCommitQueue[str]) -> None:
    queue.start()
    await asyncio.sleep(0)  # the writer task waits for work


async def one_alone_one_queued(queue: GroupCommitQueue[str]
                               ) -> tuple[asyncio.Future[Any], asyncio.Future[Any]]:
    """A write "alone" whose commit (in its own task) is under way, and a write
    "queued" behind it."""
    alone = asyncio.ensure_future(queue.write("alone"))
    await asyncio.sleep(0.005)
    queued = asyncio.ensure_future(queue.write("queued"))
    await asyncio.sleep(0)
    return alone, queued


async def test_a_lone_write_at_low_load_is_committed_in_its_callers_task() -> None:
    recorder = TaskRecorder()
    queue = make_queue(recorder, lead=True)
    await started(queue)
    for name in ("a", "b", "c"):
        assert await queue.write(name) == name.upper()
    me = asyncio.current_task()
    assert recorder.batches == [["a"], ["b"], ["c"]]
    assert recorder.tasks == [me, me, me]
    assert (queue.commits, queue.writes) == (3, 3)
    await queue.close()


async def test_writes_queued_during_a_lone_commit_go_after_it_as_one_batch() -> None:
    recorder = TaskRecorder(delay=0.01)
    queue = make_queue(recorder, lead=True)
    await started(queue)
    first = asyncio.ensure_future(queue.write("first"))
    await asyncio.sleep(0.002)  # its commit is under way, in its own task
    queue.write_nowait("nowait")
    rest = [asyncio.ensure_future(queue.write(f"w{i}")) for i in range(3)]
    assert await first == "FIRST"
    assert await asyncio.gather(*rest) == ["W0", "W1", "W2"]
    assert recorder.batches == [["first"], ["nowait", "w0", "w1", "w2"]]
    assert recorder.tasks[0] is first and recorder.tasks[1] is queue._task
    await queue.close()


async def test_under_load_every_write_goes_through_the_writer_to_share_a_batch() -> None:
    recorder = TaskRecorder(delay=0.002)
    queue = make_queue(recorder, lead=True)
    await started(queue)
    burst = asyncio.gather(*(queue.write(f"a{i}") for i in range(4)))
    await burst  # the first found the queue idle; the others came during its commit
    assert recorder.batches == [["a0"], ["a1", "a2", "a3"]]
    assert recorder.tasks[1] is queue._task
    assert await queue.write("next") == "NEXT"  # the last batch held 3: not alone
    assert recorder.tasks[-1] is queue._task
    assert await queue.write("then") == "THEN"  # the last batch held 1: alone again
    assert recorder.tasks[-1] is asyncio.current_task()
    await queue.close()


async def test_an_unawaited_write_queued_first_keeps_its_place() -> None:
    recorder = TaskRecorder()
    queue = make_queue(recorder, lead=True, linger=0.5)
    await started(queue)
    queue.write_nowait("started")
    assert await queue.write("completed") == "COMPLETED"
    assert recorder.batches == [["started", "completed"]]
    assert recorder.tasks == [queue._task]
    await queue.close()


async def test_a_lone_write_is_fenced_by_a_failed_unawaited_write() -> None:
    recorder = TaskRecorder(fail={"lost"})
    queue = make_queue(recorder, lead=True, linger=0.002)
    await started(queue)
    queue.write_nowait("lost", fence="run-1")
    await asyncio.sleep(0.05)  # committed (and failed) alone by the writer
    with pytest.raises(LeaseLostError, match="earlier append failed"):
        await queue.write("later", fence="run-1")
    assert ["later"] not in recorder.batches
    assert await queue.write("other", fence="run-2") == "OTHER"
    await queue.close()


async def test_close_waits_for_a_lone_commit_then_commits_what_was_queued() -> None:
    recorder = TaskRecorder(delay=0.02)
    queue = make_queue(recorder, lead=True, close_timeout=5.0)
    await started(queue)
    alone, queued = await one_alone_one_queued(queue)
    await asyncio.wait_for(queue.close(), 2)
    assert (await alone, await queued) == ("ALONE", "QUEUED")
    assert recorder.batches == [["alone"], ["queued"]]
    assert queue._task is not None and queue._task.done()


async def test_a_caller_cancelled_during_its_lone_commit_leaves_the_queue_working() -> None:
    recorder = TaskRecorder(delay=0.05)
    queue = make_queue(recorder, lead=True)
    await started(queue)
    alone, queued = await one_alone_one_queued(queue)
    alone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await alone
    assert await asyncio.wait_for(queued, 2) == "QUEUED"
    recorder.delay = 0
    assert await queue.write("after") == "AFTER"
    assert recorder.batches[1:] == [["queued"], ["after"]]
    await queue.close()


async def test_a_close_that_times_out_on_a_lone_commit_fails_it_without_a_hang() -> None:
    recorder = TaskRecorder(delay=30)
    queue = make_queue(recorder, lead=True, close_timeout=0.1)
    await started(queue)
    alone, queued = await one_alone_one_queued(queue)
    t0 = time.perf_counter()
    await queue.close()
    for pending in (alone, queued):
        with pytest.raises(WorldError, match="not committed, or its commit was not confirmed"):
            await asyncio.wait_for(pending, 1)
    assert time.perf_counter() - t0 < 1
