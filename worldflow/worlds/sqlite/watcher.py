"""Run ends made by other processes, seen within tens of milliseconds.

A run executed by another process ends with a commit this process hears nothing of.
Rather than each waiter polling its run, one watcher per world polls
``PRAGMA data_version`` (a counter SQLite bumps when another connection commits; no
table is read) every `interval` seconds, and only while someone waits. When it changes,
one query finds which of the waited runs have ended, and their waiters are woken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from typing import TYPE_CHECKING

import msgspec

from worldflow.worlds.sqlite.writer import connect, in_thread

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["FinishWatcher"]

logger = logging.getLogger("worldflow.world.sqlite")

DATA_VERSION = "PRAGMA data_version"
SELECT_ENDED = ("SELECT id FROM workflow_runs WHERE id IN (SELECT value FROM json_each(?)) "
                "AND status IN ('completed', 'failed', 'cancelled', 'continued')")
SET_BUSY_TIMEOUT = "PRAGMA busy_timeout = 30000"
SET_QUERY_ONLY = "PRAGMA query_only = ON"


class FinishWatcher:
    """Wakes waiters of runs that another process ended. Its task starts with the first
    waiter (`wake`) and is stopped by `close`; it idles while nobody waits.

    `waited()` gives the runs to watch: None when nobody waits (the task then sleeps
    until `wake`), and leaves out runs this process executes (their end is signalled
    here as it commits), so that a busy local engine costs the watcher nothing."""

    def __init__(self, path: str, waited: Callable[[], list[str] | None],
                 on_ended: Callable[[str], None], *, interval: float = 0.025) -> None:
        self._path = path
        self._waited = waited
        self._on_ended = on_ended
        self.interval = interval
        self._someone_waits = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def wake(self) -> None:
        """Someone started waiting: make sure the watcher is watching."""
        if self._closed:
            return
        self._someone_waits.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"worldflow-sqlite-watcher {self._path}")

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        conn = await connect(self._path, isolation_level=None)
        try:
            await in_thread(conn, _setup)
            last_version: int | None = None
            while True:
                run_ids = self._waited()
                if run_ids is None:  # nobody waits
                    self._someone_waits.clear()
                    await self._someone_waits.wait()
                    last_version = None  # commits made while idle are unknown
                    continue
                if run_ids:
                    try:
                        version = await in_thread(conn, _data_version)
                        if version != last_version:
                            last_version = version
                            for run_id in await in_thread(conn, _ended, run_ids):
                                self._on_ended(run_id)
                    except sqlite3.Error as exc:  # e.g. busy: the waiters' own poll goes on
                        logger.debug("SQLite world %s: watching run ends failed: %s",
                                     self._path, exc)
                else:
                    last_version = None  # not looking: changes meanwhile are unknown
                await asyncio.sleep(self.interval)
        finally:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await asyncio.shield(conn.close())


def _setup(conn: sqlite3.Connection) -> None:
    conn.execute(SET_BUSY_TIMEOUT)
    conn.execute(SET_QUERY_ONLY)


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute(DATA_VERSION).fetchone()[0])


def _ended(conn: sqlite3.Connection, run_ids: list[str]) -> list[str]:
    ids = msgspec.json.encode(run_ids).decode()
    return [run_id for (run_id,) in conn.execute(SELECT_ENDED, (ids,)).fetchall()]
