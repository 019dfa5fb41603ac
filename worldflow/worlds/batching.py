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
- **Close.** `close()` commits everything queued so far, then stops the task.
"""

from __future__ import annotations

import asyncio
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
                 close_timeout: float | None = None) -> None:
        self._commit = commit
        self._name = name
        self._closed_message = closed_message
        self._max_batch = max_batch
        self._linger = linger
        self._close_timeout = close_timeout
        self._queue: asyncio.Queue[QueuedWrite[RequestT] | None] = asyncio.Queue()
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
        self._put(QueuedWrite(request, future, after, fence))
        return await future

    def write_nowait(self, request: RequestT, *, after: Callable[[Any], None] | None = None,
                     fence: str | None = None) -> None:
        """Queue `request` without waiting. If it fails, the error is logged and the next
        write with the same `fence` fails with `LeaseLostError`."""
        self._put(QueuedWrite(request, None, after, fence))

    def _put(self, write: QueuedWrite[RequestT]) -> None:
        if self._closing or self._task is None or self._task.done():
            raise WorldError(self._closed_message)
        self._queue.put_nowait(write)

    async def close(self) -> None:
        """Commit everything queued so far, then stop the writer task."""
        self._closing = True
        task = self._task
        if task is None or task.done():
            return
        self._queue.put_nowait(None)
        if self._close_timeout is None:
            await task
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), self._close_timeout)
        except TimeoutError:
            task.cancel()

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            stopping = self._drain(batch)
            if not stopping and self._linger > 0 and all(w.future is None for w in batch):
                stopping = await self._wait_linger(batch)
            live = [w for w in batch if not self._fenced_out(w)]
            if not live:
                continue
            try:
                result = await self._commit(live, self._fences)
            except Exception as exc:  # the writer must outlive any one batch
                logger.exception("%s: a write batch failed", self._name)
                error = WorldError(f"{type(exc).__name__}: {exc}")
                result = BatchResult([Failed(error) for _ in live], committed=False)
            if result.committed:
                self.commits += 1
                self.writes += len(live)
            self._resolve(live, result.outcomes)

    def _drain(self, batch: list[QueuedWrite[RequestT]]) -> bool:
        """Add what is queued to `batch`; True if the writer was told to stop."""
        while len(batch) < self._max_batch and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                return True
            batch.append(item)
        return False

    async def _wait_linger(self, batch: list[QueuedWrite[RequestT]]) -> bool:
        try:
            async with asyncio.timeout(self._linger):
                item = await self._queue.get()
        except TimeoutError:
            return False
        if item is None:
            return True
        batch.append(item)
        return self._drain(batch)

    def _fenced_out(self, write: QueuedWrite[RequestT]) -> bool:
        error = self._fences.check(write)
        if error is None:
            return False
        if write.future is not None and not write.future.done():
            write.future.set_exception(error)
        return True

    def _resolve(self, batch: list[QueuedWrite[RequestT]], outcomes: list[Outcome]) -> None:
        for write, outcome in zip(batch, outcomes, strict=True):
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
