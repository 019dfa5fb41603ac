"""Group commit, shared by the SQLite and Postgres writers.

Callers queue a write (a world-specific request) with a future; one writer task takes
everything queued (up to `max_batch`) and hands it to the world's `commit` function,
which applies the whole batch in one transaction and reports one `Outcome` per write,
in order. Each caller's future resolves after that commit, so whatever the caller does
next sees its write durable.

- **Ordering.** Writes are committed in the order they were queued; a batch holds
  writes of many callers, and one caller's writes keep their order across batches.
- **Fencing.** A write may name a `fence` (a run id). If a write nobody awaited
  (`write_nowait`) fails, the next write with the same fence fails with
  `LeaseLostError` without being sent, so a later append never commits past a lost one.
- **Linger.** When every queued write is unawaited (e.g. a `step_started`), the writer
  may wait `linger` seconds for the awaited write that usually follows, to share a
  commit with it.
- **Overlap.** One batch is in flight at a time, and its callers resume together when
  it commits. Were they all to run and then all wait for the next commit, the process
  and the database would take turns, each idle while the other works. So the writer
  keeps two groups going: when the next batch is already queued as a batch commits, it
  sends that batch before the committed callers resume; and a big batch whose callers
  would all resume at once is resumed in two halves, the second as soon as the first
  half's next writes are on their way (or after `HOLD` seconds). The database commits
  one half's writes while this process runs the other half's code.
- **Alone.** At low load (the last batch held one write), an awaited write that finds
  the writer waiting for work, with nothing queued, is committed in its caller's task
  (`lead=True`): a run alone on the queue then does not pay for the writer's two turns
  of the event loop, to wake it and to resume the caller, on every commit. Writes
  queued meanwhile wait for it and go as the writer's next batch; once batches hold
  more than one write, every write goes through the writer again, to share them.
- **Close.** `close()` commits everything queued so far, then stops the task.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from worldflow.errors import LeaseLostError, WorldError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "BatchResult",
    "Committed",
    "Failed",
    "Fences",
    "GroupCommitQueue",
    "Outcome",
    "QueuedWrite",
]

logger = logging.getLogger("worldflow.world")

RequestT = TypeVar("RequestT")

#: a committed batch with at least this many awaited writes is resumed in two halves
SPLIT_MIN = 8
#: seconds a half may be held back for the other half's next batch, at most
HOLD = 0.002


@dataclasses.dataclass(slots=True, frozen=True)
class Committed:
    """The write committed; `value` is its result (given to its caller and `after`)."""

    value: Any


@dataclasses.dataclass(slots=True, frozen=True)
class Failed:
    """The write did not commit (only it, or its whole batch); `error` goes to its caller."""

    error: BaseException


Outcome = Committed | Failed


@dataclasses.dataclass(slots=True, frozen=True)
class BatchResult:
    """A batch's outcomes, one per write in order; `committed`: a transaction committed
    (False when the whole batch failed)."""

    outcomes: list[Outcome]
    committed: bool


@dataclasses.dataclass(slots=True)
class QueuedWrite(Generic[RequestT]):
    """One caller's write: its request, where its result goes, and its fence."""

    request: RequestT
    future: asyncio.Future[Any] | None
    after: Callable[[Any], None] | None
    fence: str | None


class Fences:
    """Poisoned fences: the error of a failed write nobody awaited, by fence (run id).

    The queue checks them before a batch is sent; a world that applies a batch write by
    write may check again between writes (`check`, `poison`), so that a failure fences
    the writes after it in the same batch too."""

    def __init__(self) -> None:
        self._poisoned: dict[str, BaseException] = {}

    def check(self, write: QueuedWrite[Any]) -> LeaseLostError | None:
        """The error `write` must fail with, if an earlier write of its fence was lost.
        An awaited write takes the poison away (its caller learns of the loss)."""
        if write.fence is None or write.fence not in self._poisoned:
            return None
        earlier = (self._poisoned.pop(write.fence) if write.future is not None
                   else self._poisoned[write.fence])
        return LeaseLostError(f"run {write.fence}: an earlier append failed: {earlier}")

    def poison(self, write: QueuedWrite[Any], error: BaseException) -> None:
        if write.future is None and write.fence is not None:
            self._poisoned.setdefault(write.fence, error)


class GroupCommitQueue(Generic[RequestT]):
    """The queue of writes and the task that commits them in batches."""

    def __init__(self, commit: Callable[[list[QueuedWrite[RequestT]], Fences],
                                        Awaitable[BatchResult]], *,
                 name: str, closed_message: str, max_batch: int, linger: float = 0.0,
                 close_timeout: float | None = None, overlap: bool = True,
                 lead: bool = False) -> None:
        self._commit = commit
        #: an awaited write that finds the writer idle at low load is committed in its
        #: caller's task (see "Alone" in the module docstring)
        self._lead = lead
        #: the task committing a write alone, and whether close() gave up on it
        self._leader: asyncio.Task[Any] | None = None
        self._leader_abandoned = False
        #: writes in the last batch committed: more than one means load, and then every
        #: write goes through the writer task to share a batch
        self._last_batch = 0
        self._name = name
        self._closed_message = closed_message
        self._max_batch = max_batch
        self._linger = linger
        #: how long committed callers are held back for the next batch, at most
        self._hold = linger or HOLD
        #: hold committed callers back for the next batch (False: each batch's callers
        #: resume as soon as it commits)
        self._overlap = overlap
        self._close_timeout = close_timeout
        self._items: collections.deque[QueuedWrite[RequestT]] = collections.deque()
        self._awaited = 0  # queued writes whose callers wait for them
        self._flush = False  # the linger is over: queued writes go even if none is awaited
        self._linger_timer: asyncio.TimerHandle | None = None
        self._wake: asyncio.Future[None] | None = None  # the writer waits on it
        #: committed writes whose callers have not been told yet: they are told as soon
        #: as the next batch is on its way (see "Overlap" in the module docstring)
        self._held: list[tuple[QueuedWrite[RequestT], Outcome]] = []
        self._in_flight: list[QueuedWrite[RequestT]] = []  # the batch being committed
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._fences = Fences()
        #: transactions committed (each holds one batch of writes), and writes committed
        self.commits = 0
        self.writes = 0

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def write(self, request: RequestT, *, after: Callable[[Any], None] | None = None,
                    fence: str | None = None) -> Any:
        """Queue `request`; return its result once its transaction has committed.

        `after(result)` runs on the event loop right after the commit, before the caller
        resumes (wake-ups must not fire before what they announce is visible)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        write = QueuedWrite(request, future, after, fence)
        if self._lead and self._alone():
            await self._commit_alone(write)
        else:
            self._put(write)
        return await future

    def _alone(self) -> bool:
        """A write now may be committed alone: the load is low (the last batch held one
        write), and the writer task waits for work with nothing queued, held, in flight
        or being committed alone."""
        wake = self._wake
        return (self._last_batch <= 1 and wake is not None and not wake.done()
                and not self._items and not self._held and self._leader is None
                and not self._closing)

    async def _commit_alone(self, write: QueuedWrite[RequestT]) -> None:
        """Commit `write` in the caller's task, without the writer's turns on the way
        there and back. Writes queued meanwhile wait for it (`_due`), and the writer
        sends them after."""
        task = self._leader = asyncio.current_task()
        try:
            if not self._fenced_out(write):
                result = await self._commit_safely([write])
                self._count(1, result)
                self._resolve([(write, result.outcomes[0])])
        except asyncio.CancelledError:
            if not self._leader_abandoned or task is None:
                raise
            # close() timed out on this commit: its caller learns so, as the callers of
            # the writer's batch in flight do
            task.uncancel()
            assert write.future is not None
            if not write.future.done():
                write.future.set_exception(self._lost())
        finally:
            self._leader = None
            self._leader_abandoned = False
            if self._items or self._closing:
                self._wake_writer()

    def write_nowait(self, request: RequestT, *, after: Callable[[Any], None] | None = None,
                     fence: str | None = None) -> None:
        """Queue `request` without waiting. If it fails, the error is logged and the next
        write with the same `fence` fails with `LeaseLostError`."""
        self._put(QueuedWrite(request, None, after, fence))

    def _put(self, write: QueuedWrite[RequestT]) -> None:
        if self._closing or self._task is None or self._task.done():
            raise WorldError(self._closed_message)
        self._items.append(write)
        if write.future is not None:
            self._awaited += 1
            self._wake_writer()
        elif self._linger <= 0:
            self._flush = True
            self._wake_writer()
        elif self._linger_timer is None and not self._flush:
            # unawaited: it waits for an awaited write to share its commit, or the linger
            self._linger_timer = asyncio.get_running_loop().call_later(
                self._linger, self._linger_over)

    def _linger_over(self) -> None:
        self._linger_timer = None
        self._flush = True
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _due(self) -> bool:
        """A batch should go now: a queued write is awaited, or the linger is over, or
        the queue is closing."""
        return (bool(self._items) and self._leader is None
                and (self._awaited > 0 or self._flush or self._closing))

    async def close(self) -> None:
        """Commit everything queued so far, then stop the writer task."""
        self._closing = True
        task = self._task
        if task is None or task.done():
            return
        self._wake_writer()
        if self._close_timeout is None:
            await task
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), self._close_timeout)
        except TimeoutError:
            task.cancel()
            if self._leader is not None:
                self._leader_abandoned = True
                self._leader.cancel()

    async def _wait(self, timeout: float | None) -> None:
        """Until a batch is due or the queue closes (or `timeout` seconds pass)."""
        if self._due() or (self._closing and self._leader is None):
            return
        loop = asyncio.get_running_loop()
        self._wake = loop.create_future()
        timer = loop.call_later(timeout, self._wake_writer) if timeout is not None else None
        try:
            await self._wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()

    def _take(self) -> list[QueuedWrite[RequestT]]:
        """The next batch: what is queued, up to `max_batch` writes."""
        items = self._items
        if len(items) <= self._max_batch:
            batch = list(items)
            items.clear()
        else:
            batch = [items.popleft() for _ in range(self._max_batch)]
        self._awaited -= sum(1 for w in batch if w.future is not None)
        if not items:
            self._flush = False
            if self._linger_timer is not None:
                self._linger_timer.cancel()
                self._linger_timer = None
        return batch

    async def _run(self) -> None:
        try:
            await self._serve()
        finally:  # closed, or cancelled at the close timeout: nobody is left waiting
            self._release_held()
            lost = self._lost()
            for write in (*self._in_flight, *self._items):
                if write.future is not None and not write.future.done():
                    write.future.set_exception(lost)
            self._in_flight = []
            self._items.clear()

    def _lost(self) -> WorldError:
        return WorldError(f"{self._closed_message} (the write was not committed, or its "
                          f"commit was not confirmed)")

    async def _serve(self) -> None:
        while True:
            await self._wait(self._hold if self._held else None)
            if not self._due():
                if self._held:  # nothing came soon: tell the held callers now
                    self._release_held()
                if self._closing and not self._items and self._leader is None:
                    return
                continue
            live = [w for w in self._take() if not self._fenced_out(w)]
            if not live:
                continue
            self._in_flight = live
            if self._held:
                # the commit starts (its task runs first) before the held callers resume
                commit = asyncio.ensure_future(self._commit_safely(live))
                self._release_held()
                try:
                    result = await asyncio.shield(commit)
                except asyncio.CancelledError:
                    commit.cancel()
                    raise
            else:
                result = await self._commit_safely(live)
            self._in_flight = []
            self._count(len(live), result)
            done = list(zip(live, result.outcomes, strict=True))
            # failures first, and at once: they fence the writes that follow them
            self._resolve([d for d in done if isinstance(d[1], Failed)])
            ok = [d for d in done if isinstance(d[1], Committed)]
            if not self._overlap or self._closing:
                self._resolve(ok)
            elif self._items:
                self._held = ok  # the next batch is coming: it goes out before these resume
            else:
                split = self._split_point(ok)
                self._resolve(ok[:split])
                self._held = ok[split:]

    def _count(self, writes: int, result: BatchResult) -> None:
        """A batch of `writes` writes came back: the load it shows, and the totals."""
        self._last_batch = writes
        if result.committed:
            self.commits += 1
            self.writes += writes

    def _release_held(self) -> None:
        held, self._held = self._held, []
        self._resolve(held)

    async def _commit_safely(self, batch: list[QueuedWrite[RequestT]]) -> BatchResult:
        try:
            return await self._commit(batch, self._fences)
        except Exception as exc:  # the writer must outlive any one batch
            logger.exception("%s: a write batch failed", self._name)
            error = WorldError(f"{type(exc).__name__}: {exc}")
            return BatchResult([Failed(error) for _ in batch], committed=False)

    @staticmethod
    def _split_point(done: list[tuple[QueuedWrite[RequestT], Outcome]]) -> int:
        """Where to cut a committed batch whose callers all resume at once: the first
        part resumes now, the rest once the first part's next writes are on their way.
        Small batches are not cut."""
        awaited = [i for i, (write, _) in enumerate(done) if write.future is not None]
        if len(awaited) < SPLIT_MIN:
            return len(done)
        return awaited[len(awaited) // 2]

    def _fenced_out(self, write: QueuedWrite[RequestT]) -> bool:
        error = self._fences.check(write)
        if error is None:
            return False
        if write.future is not None and not write.future.done():
            write.future.set_exception(error)
        return True

    def _resolve(self, done: list[tuple[QueuedWrite[RequestT], Outcome]]) -> None:
        for write, outcome in done:
            future = write.future
            match outcome:
                case Committed(value=value):
                    if write.after is not None:
                        try:
                            write.after(value)
                        except Exception:
                            logger.exception("wake-up after a commit failed")
                    if future is not None and not future.done():
                        future.set_result(value)
                case Failed(error=error):
                    if future is None:
                        logger.warning("a queued write failed: %s", error)
                        self._fences.poison(write, error)
                    elif not future.done():
                        future.set_exception(error)
