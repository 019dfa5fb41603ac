"""Group commit on SQLite: every write of a world goes through one connection.

SQLite allows one writer at a time, and the cost of a write is its commit (an fsync)
plus the hop into aiosqlite's thread. So callers queue their write (a plain function
of a `sqlite3.Connection`) on the shared group-commit queue (worlds/batching.py); each
batch runs in one transaction, in one hop into the connection's thread. A batch in
which a write fails is applied again with each write under its own SAVEPOINT, so one
caller's error rolls back only that caller's changes and is raised only to that caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite

from worldflow.errors import WorldError
from worldflow.worlds.batching import (
    BatchResult,
    Committed,
    Failed,
    Fences,
    GroupCommitQueue,
    Outcome,
    QueuedWrite,
)
from worldflow.worlds.sqlite.log import merge_appends

__all__ = ["SQLiteCommitter", "connect", "in_thread", "world_error"]

logger = logging.getLogger("worldflow.world.sqlite")

T = TypeVar("T")
#: one write: a plain function run inside the batch's transaction (under a savepoint)
Apply = Callable[[sqlite3.Connection], Any]

#: the most writes one transaction takes; more wait for the next one
MAX_BATCH = 500
#: seconds writes nobody awaits (a step's `step_started`) may wait for a write that is
#: awaited (usually its `step_completed`), to share its commit
LINGER = 0.002


def world_error(path: str, exc: BaseException) -> WorldError:
    """The driver's error as worldflow's own, so no sqlite3 exception reaches the engine."""
    message = f"SQLite world {path}: {type(exc).__name__}: {exc}"
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        message += (" (the disk, or the database's max_page_count, is full: nothing of "
                    "this write was stored; free space and the waiting runs go on)")
    return WorldError(message)


async def connect(database: str, **kwargs: Any) -> aiosqlite.Connection:
    """An aiosqlite connection to `database` (`kwargs` as for `aiosqlite.connect`). If
    the caller is cancelled while it opens (the world closing, or its opening cancelled),
    the connection is closed once open, not left to the collector with its thread."""
    opening = asyncio.ensure_future(aiosqlite.connect(database, **kwargs))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await (await opening).close()
        raise


async def in_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(sqlite3_connection, *args)` in the connection's thread: one hop, however
    many statements `fn` executes."""
    raw = conn._conn  # the sqlite3 connection, only ever used in conn's own thread
    result: T = await conn._execute(fn, raw, *args)  # type: ignore[no-untyped-call]
    return result


class SQLiteCommitter:
    """Commits batches of writes (plain functions of a `sqlite3.Connection`) on the
    world's one write connection, through the shared group-commit queue."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn = conn
        self._path = path
        self.queue: GroupCommitQueue[Apply] = GroupCommitQueue(
            self._commit, name="worldflow-sqlite-writer", max_batch=MAX_BATCH,
            linger=LINGER, overlap=False, lead=True,
            closed_message=(f"SQLite world {path} is closed; open it first "
                            f"(await world.open() or async with world)"))

    async def _commit(self, batch: list[QueuedWrite[Apply]], fences: Fences) -> BatchResult:
        try:
            return await in_thread(self._conn, self._commit_batch, batch, fences)
        except Exception as exc:  # the hop itself failed: the connection is gone
            error = world_error(self._path, exc)
            return BatchResult([Failed(error) for _ in batch], committed=False)

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[QueuedWrite[Apply]],
                      fences: Fences) -> BatchResult:
        """One transaction for the whole batch (runs in the connection's thread).

        The writes are applied one after another as they are, which is what nearly
        every batch needs; if one raises, the transaction is rolled back and the batch
        applied again write by write, each under its own savepoint, so that only the
        failing write's changes are undone and only its caller gets the error."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                requests, carried_by = merge_appends([write.request for write in batch])
                results = [request(conn) for request in requests]
                # a write carried by a later one's request: an append of a step's start,
                # whose own result (the run did not end) is False
                last = {index: k for k, index in enumerate(carried_by)}
                outcomes: list[Outcome] = [
                    Committed(results[index] if last[index] == k else False)
                    for k, index in enumerate(carried_by)]
            except Exception:
                if not conn.in_transaction:
                    raise  # SQLite rolled the whole transaction back (disk full, I/O)
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                outcomes = [self._apply_one(conn, write, fences) for write in batch]
            conn.execute("COMMIT")
        except Exception as exc:
            return self._fail_all(conn, batch, exc)
        return BatchResult(outcomes, committed=True)

    def _apply_one(self, conn: sqlite3.Connection, write: QueuedWrite[Apply],
                   fences: Fences) -> Outcome:
        fenced = fences.check(write)  # an earlier write of this run failed in this batch
        if fenced is not None:
            return Failed(fenced)
        conn.execute("SAVEPOINT write")
        try:
            result = write.request(conn)
        except Exception as exc:
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back (disk full, I/O error): the
                # writes before this one are lost too, so the whole batch fails
                raise
            conn.execute("ROLLBACK TO write")
            conn.execute("RELEASE write")
            error = world_error(self._path, exc) if isinstance(exc, sqlite3.Error) else exc
            fences.poison(write, error)
            return Failed(error)
        conn.execute("RELEASE write")
        return Committed(result)

    def _fail_all(self, conn: sqlite3.Connection, batch: list[QueuedWrite[Apply]],
                  exc: BaseException) -> BatchResult:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                logger.warning("rolling back a failed batch failed", exc_info=True)
        return BatchResult([Failed(world_error(self._path, exc)) for _ in batch],
                           committed=False)
