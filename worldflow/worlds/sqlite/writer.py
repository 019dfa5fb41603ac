"""Group commit: every write of a world goes through one writer task and one connection.

SQLite allows one writer at a time, and the cost of a write is its commit (an fsync)
plus the hop into aiosqlite's thread. So callers queue their write (a plain function
of a `sqlite3.Connection`) with a future; the writer task takes everything queued and
runs it in one transaction, in one hop into the connection's thread, then resolves
each caller's future. Each write runs under its own SAVEPOINT, so one caller's error
rolls back only that caller's changes and is raised only to that caller.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from worldflow.errors import LeaseLostError, WorldError

if TYPE_CHECKING:
    from collections.abc import Callable

    import aiosqlite

__all__ = ["GroupCommitWriter", "in_thread", "world_error"]

logger = logging.getLogger("worldflow.world.sqlite")

T = TypeVar("T")

#: the most writes one transaction takes; more wait for the next one
MAX_BATCH = 500


def world_error(path: str, exc: BaseException) -> WorldError:
    """The driver's error as worldflow's own, so no sqlite3 exception reaches the engine."""
    return WorldError(f"SQLite world {path}: {type(exc).__name__}: {exc}")


async def in_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(sqlite3_connection, *args)` in the connection's thread: one hop, however
    many statements `fn` executes."""
    raw = conn._conn  # the sqlite3 connection, only ever used in conn's own thread
    result: T = await conn._execute(fn, raw, *args)  # type: ignore[no-untyped-call]
    return result


class _Write(Generic[T]):
    __slots__ = ("after", "apply", "fence", "future")

    def __init__(self, apply: Callable[[sqlite3.Connection], T],
                 future: asyncio.Future[T] | None, after: Callable[[T], None] | None,
                 fence: str | None) -> None:
        self.apply = apply
        self.future = future
        self.after = after
        self.fence = fence


class GroupCommitWriter:
    """Owns the write connection and the task that commits queued writes in batches."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn = conn
        self._path = path
        self._queue: asyncio.Queue[_Write[Any] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # fence -> the error of a write nobody awaited; the fence's next write gets it,
        # so that a later append never commits past an earlier one that failed
        self._poisoned: dict[str, BaseException] = {}
        #: transactions committed (each holds one batch of writes)
        self.commits = 0
        #: writes committed
        self.writes = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="worldflow-sqlite-writer")

    async def write(self, apply: Callable[[sqlite3.Connection], T], *,
                    after: Callable[[T], None] | None = None, fence: str | None = None) -> T:
        """Queue `apply` and return its result once its transaction has committed.

        `after(result)` runs on the event loop right after the commit (wake-ups must
        not fire before what they announce is visible)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._put(_Write(apply, future, after, fence))
        return await future

    def write_nowait(self, apply: Callable[[sqlite3.Connection], T], *,
                     after: Callable[[T], None] | None = None, fence: str | None = None) -> None:
        """Queue `apply` without waiting. If it fails, the error is logged and the next
        write with the same `fence` fails with `LeaseLostError`."""
        self._put(_Write(apply, None, after, fence))

    def _put(self, write: _Write[Any]) -> None:
        if self._closing or self._task is None or self._task.done():
            raise WorldError(f"SQLite world {self._path} is closed; open it first "
                             f"(await world.open() or async with world)")
        self._queue.put_nowait(write)

    async def close(self) -> None:
        """Commit everything queued so far, then stop the writer task."""
        self._closing = True
        if self._task is not None and not self._task.done():
            self._queue.put_nowait(None)
            await self._task

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                outcomes = await in_thread(self._conn, self._commit_batch, batch)
            except Exception as exc:  # the hop itself failed: the connection is gone
                outcomes = [(False, world_error(self._path, exc)) for _ in batch]
            self._resolve(batch, outcomes)

    def _commit_batch(self, conn: sqlite3.Connection,
                      batch: list[_Write[Any]]) -> list[tuple[bool, Any]]:
        """One transaction for the whole batch (runs in the connection's thread)."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes = [self._apply_one(conn, write) for write in batch]
            conn.execute("COMMIT")
        except Exception as exc:
            return self._fail_all(conn, batch, exc)
        self.commits += 1
        self.writes += len(batch)
        return outcomes

    def _apply_one(self, conn: sqlite3.Connection, write: _Write[Any]) -> tuple[bool, Any]:
        if write.fence is not None and write.fence in self._poisoned:
            earlier = (self._poisoned.pop(write.fence) if write.future is not None
                       else self._poisoned[write.fence])
            return False, LeaseLostError(f"run {write.fence}: an earlier append failed: "
                                         f"{earlier}")
        conn.execute("SAVEPOINT write")
        try:
            result = write.apply(conn)
        except Exception as exc:
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back (disk full, I/O error): the
                # writes before this one are lost too, so the whole batch fails
                raise
            conn.execute("ROLLBACK TO write")
            conn.execute("RELEASE write")
            error = world_error(self._path, exc) if isinstance(exc, sqlite3.Error) else exc
            if write.future is None and write.fence is not None:
                self._poisoned[write.fence] = error
            return False, error
        conn.execute("RELEASE write")
        return True, result

    def _fail_all(self, conn: sqlite3.Connection, batch: list[_Write[Any]],
                  exc: BaseException) -> list[tuple[bool, Any]]:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                logger.warning("rolling back a failed batch failed", exc_info=True)
        outcomes: list[tuple[bool, Any]] = []
        for write in batch:
            error = world_error(self._path, exc)
            if write.future is None and write.fence is not None:
                self._poisoned.setdefault(write.fence, error)
            outcomes.append((False, error))
        return outcomes

    def _resolve(self, batch: list[_Write[Any]], outcomes: list[tuple[bool, Any]]) -> None:
        for write, (ok, value) in zip(batch, outcomes, strict=True):
            if ok and write.after is not None:
                try:
                    write.after(value)
                except Exception:
                    logger.exception("wake-up after a commit failed")
            future = write.future
            if future is None:
                if not ok:
                    logger.warning("a queued write failed: %s", value)
            elif not future.done():
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
