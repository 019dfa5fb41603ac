"""The SQLite world's connections to its file: opening, the group-commit writer, reads,
closing.

Every write goes through one `GroupCommitWriter` (one connection, one transaction per
batch of callers); reads use their own connections, which WAL lets run while the
writer commits. Several processes may share the file: SQLite's write lock (taken with
`BEGIN IMMEDIATE`) serialises their batches, and `busy_timeout` makes them wait for it
instead of failing with "database is locked".

It is separate from worldflow.worlds.sqlite.world because it is about reaching the file
(PRAGMAs, migration, read-only mounts, which connection runs a call, turning sqlite3
errors into `WorldError`), not about what the `World` methods store: `SQLiteWorld`
builds on `SQLiteConnections` and runs each method as one `_read` or `_write` here.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import urllib.request
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from worldflow.core.world import BaseWorld
from worldflow.errors import WorldError
from worldflow.worlds.sqlite.schema import check_file, check_schema, migrate
from worldflow.worlds.sqlite.watcher import FinishWatcher
from worldflow.worlds.sqlite.writer import SQLiteCommitter, connect, in_thread, world_error

if TYPE_CHECKING:
    from collections.abc import Callable

    import aiosqlite

    from worldflow.worlds.batching import GroupCommitQueue

__all__ = ["SQLiteConnections", "call_on"]

T = TypeVar("T")

logger = logging.getLogger("worldflow.world.sqlite")

# PRAGMAs take no parameters, so each allowed value has its own constant statement
SET_SYNCHRONOUS = {mode: "PRAGMA synchronous = " + mode
                   for mode in ("OFF", "NORMAL", "FULL", "EXTRA")}
#: a connection waits this long (ms) for another process's write lock before failing
SET_BUSY_TIMEOUT = "PRAGMA busy_timeout = 30000"
SET_WAL = "PRAGMA journal_mode = WAL"
SET_QUERY_ONLY = "PRAGMA query_only = ON"


class SQLiteConnections(BaseWorld):
    """The connections of an `SQLiteWorld` to its file, and the calls that run on them."""

    #: read connections; reads are spread over them by how busy each is
    read_connections = 2

    def __init__(self, path: str = ".worldflow/worldflow.db", *, synchronous: str = "FULL",
                 read_only: bool = False, **options: Any) -> None:
        super().__init__(**options)
        mode = str(synchronous).upper()
        if mode not in SET_SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SET_SYNCHRONOUS)}, "
                             f"got {synchronous!r}")
        path = os.fspath(path)
        if path == "" or path == ":memory:" or path.startswith("file:"):
            raise ValueError(f"the SQLite world needs a file path, got {path!r} "
                             f"(for a world in memory, use the memory world)")
        self.path = path
        self.synchronous = mode
        self.read_only = bool(read_only)
        self._absolute_path = os.path.abspath(path)
        self._writer: GroupCommitQueue[Callable[[sqlite3.Connection], Any]] | None = None
        self._write_conn: aiosqlite.Connection | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._reader_load: list[int] = []
        self._watcher: FinishWatcher | None = None

    @property
    def commits(self) -> int:
        """Transactions committed by this world's writer (each holds a batch of writes)."""
        return 0 if self._writer is None else self._writer.commits

    # -- lifecycle ---------------------------------------------------------------
    async def _open(self) -> None:
        if self.read_only:
            await self._open_read_only()
            return
        await anyio.to_thread.run_sync(self._prepare_file)
        try:
            self._write_conn = await self._connect()
            await in_thread(self._write_conn, self._setup_writer)
            for _ in range(self.read_connections):
                reader = await self._connect()
                self._readers.append(reader)
                await in_thread(reader, _setup_reader)
        except sqlite3.Error as exc:
            await self._disconnect()
            raise world_error(self.path, exc) from exc
        except BaseException:
            await self._disconnect()
            raise
        self._reader_load = [0] * len(self._readers)
        self._writer = SQLiteCommitter(self._write_conn, self.path).queue
        self._writer.start()
        self._watcher = FinishWatcher(self.path, self._runs_to_watch, self._signal_finished)

    async def _open_read_only(self) -> None:
        if not await anyio.Path(self.path).is_file():
            raise WorldError(f"SQLite world {self.path}: no such file (a read-only world "
                             f"must exist)")
        base = "file:" + urllib.request.pathname2url(self._absolute_path)
        # immutable: a WAL file whose -shm cannot be created (a read-only mount) can
        # still be read, as long as nobody writes it meanwhile
        for uri in (base + "?mode=ro", base + "?mode=ro&immutable=1"):
            try:
                for _ in range(self.read_connections):
                    reader = await connect(uri, uri=True, isolation_level=None,
                                           cached_statements=256)
                    self._readers.append(reader)
                    await in_thread(reader, _setup_read_only, self.path)
            except sqlite3.Error as exc:
                await self._disconnect()
                error: sqlite3.Error = exc
                continue
            except BaseException:
                await self._disconnect()
                raise
            self._reader_load = [0] * len(self._readers)
            return
        raise world_error(self.path, error)

    def _prepare_file(self) -> None:
        check_file(self.path)  # before anything (even the journal mode) is written
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise WorldError(f"cannot create the directory of SQLite world {self.path!r}: "
                             f"{exc}") from exc

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: transactions are begun and committed explicitly
        return await connect(self.path, isolation_level=None, cached_statements=256)

    def _setup_writer(self, conn: sqlite3.Connection) -> None:
        conn.execute(SET_BUSY_TIMEOUT)
        migrate(conn, self.path)  # raises before the journal mode changes, if refused
        mode = conn.execute(SET_WAL).fetchone()[0]
        if str(mode).lower() != "wal":  # e.g. a network file system without shared memory
            logger.warning("SQLite world %s: journal mode is %s, not WAL; reads will wait "
                           "for writes", self.path, mode)
        conn.execute(SET_SYNCHRONOUS[self.synchronous])

    async def _close(self) -> None:
        # shielded: queued writes were promised a commit, and connections must not leak
        with anyio.CancelScope(shield=True):
            watcher, self._watcher = self._watcher, None
            if watcher is not None:
                await watcher.close()
            try:
                if self._writer is not None:
                    await self._writer.close()  # commits everything queued so far
            finally:
                self._writer = None
                await self._disconnect()

    async def _disconnect(self) -> None:
        connections = [*self._readers, self._write_conn]
        self._readers, self._reader_load, self._write_conn = [], [], None
        for conn in connections:
            if conn is not None:
                try:
                    await conn.close()
                except (sqlite3.Error, ValueError):
                    pass  # closing is best effort; the file is consistent after a commit

    async def _write(self, fn: Callable[..., T], *args: Any,
                     after: Callable[[T], None] | None = None, fence: str | None = None) -> T:
        """Run `fn(conn, *args)` in the next group commit; return once it is committed."""
        result: T = await self._require_writer().write(functools.partial(call_on, fn, args),
                                                       after=after, fence=fence)
        return result

    def _runs_to_watch(self) -> list[str] | None:
        """Waited runs whose end another process may commit (None: nobody waits)."""
        if not self._run_waiters:
            return None
        engine = self.engine
        local = engine.actors if engine is not None else {}
        return [run_id for run_id in self._run_waiters if run_id not in local]

    def _watch_run_ends(self) -> None:
        # one watcher for every waiter: run ends committed by other processes
        if self._watcher is not None:
            self._watcher.wake()

    def _require_writer(self) -> GroupCommitQueue[Callable[[sqlite3.Connection], Any]]:
        if self._writer is None:
            if self.read_only and self._readers:
                raise WorldError(f"SQLite world {self.path} is open read-only (the file or "
                                 f"its directory cannot be written): it cannot be changed")
            raise WorldError(f"SQLite world {self.path} is not open; use `async with world` "
                             f"or `await world.open()` first")
        return self._writer

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._readers:
            raise WorldError(f"SQLite world {self.path} is not open; use `async with world` "
                             f"or `await world.open()` first")
        index = min(range(len(self._readers)), key=self._reader_load.__getitem__)
        self._reader_load[index] += 1
        try:
            return await in_thread(self._readers[index], fn, *args)
        except sqlite3.Error as exc:
            raise world_error(self.path, exc) from exc
        except ValueError as exc:
            if str(exc) in ("Connection closed", "no active connection"):
                raise WorldError(f"SQLite world {self.path} is closed") from exc
            raise
        finally:
            if index < len(self._reader_load):
                self._reader_load[index] -= 1



def call_on(fn: Callable[..., T], args: tuple[Any, ...], conn: sqlite3.Connection) -> T:
    """`fn(conn, *args)`: a write function bound to its arguments (with
    functools.partial) for the writer, which supplies the connection."""
    return fn(conn, *args)


def _setup_read_only(conn: sqlite3.Connection, path: str) -> None:
    _setup_reader(conn)
    check_schema(conn, path)


def _setup_reader(conn: sqlite3.Connection) -> None:
    conn.execute(SET_BUSY_TIMEOUT)
    conn.execute(SET_QUERY_ONLY)  # a read connection never writes, by mistake
