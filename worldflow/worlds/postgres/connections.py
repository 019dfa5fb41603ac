"""What the Postgres world holds and how each of its concerns reaches the server.

`PostgresConnections` owns the settings, the connection pool, the group-commit writers
and the listener: opening and closing them, running a function on a pooled connection
through a server restart (`_run`), picking a run's writer (`_require_writer`), and
turning NOTIFYs into in-process wake-ups. The world's concerns (runs.py, queue.py,
inbox.py, slots.py, streams.py) are classes over this one, composed in world.py; this
module is separate because every one of them uses it and none of it is a World
operation.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import asyncpg

from worldflow.core.world import BaseWorld
from worldflow.errors import WorldError, WorldflowError
from worldflow.worlds.postgres import sql
from worldflow.worlds.postgres.listener import Listener
from worldflow.worlds.postgres.messages import (
    InboxChanged,
    Notice,
    RunEnded,
    SlotReleased,
    StreamChanged,
    WorkAvailable,
    encode_notice,
)
from worldflow.worlds.postgres.schema import setup_schema
from worldflow.worlds.postgres.writer import CONNECTION_ERRORS, PostgresCommitter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["RETRY_FOR", "PostgresConnections"]

T = TypeVar("T")
_PREFIX = re.compile(r"^[A-Za-z0-9_]{1,40}$")
#: how long an operation keeps retrying while the server is unreachable (a restart)
RETRY_FOR = 60.0


class _PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection released without asyncpg's reset query (advisory unlock,
    CLOSE ALL, UNLISTEN, RESET ALL): one round trip saved per borrow. Safe because the
    world leaves no session state on a pooled connection: no LISTEN (the listener has its
    own connection), no SET, no cursors, only transaction-scoped advisory locks. An open
    transaction is still rolled back on release (asyncpg does that before the query)."""

    def get_reset_query(self) -> str:
        return ""


class PostgresConnections(BaseWorld):
    """The Postgres world's settings and connections; the ways its concerns use them."""

    def __init__(self, connection_string: str | None = None, *, job_prefix: str = "worldflow",
                 pool_size: int = 10, connect_timeout: float = 5.0, writers: int = 1,
                 **options: Any) -> None:
        super().__init__(**options)
        if not connection_string:
            raise ValueError("the Postgres world needs a connection string: set "
                             "WORKFLOW_POSTGRES_URL (or DATABASE_URL), or pass "
                             "connection_string=")
        if not isinstance(job_prefix, str) or not _PREFIX.match(job_prefix):
            raise ValueError(f"job_prefix must be 1-40 letters, digits or _, "
                             f"got {job_prefix!r}")
        if not isinstance(pool_size, int) or pool_size < 2:
            raise ValueError(f"pool_size must be an integer >= 2, got {pool_size!r}")
        if isinstance(writers, bool) or not isinstance(writers, int) or not 1 <= writers <= 8:
            raise ValueError(f"writers must be an integer from 1 to 8, got {writers!r}")
        self.connection_string = connection_string
        self.job_prefix = job_prefix
        self.pool_size = pool_size
        #: group-commit writers (connections), each committing its share of the runs
        self.writers = writers
        self.connect_timeout = float(connect_timeout)
        self.channel = f"worldflow_{job_prefix.lower()}"
        parsed = urlparse(connection_string)
        self.address = f"{parsed.hostname or 'localhost'}:{parsed.port or 5432}"
        self._pool: asyncpg.Pool | None = None
        self._writers: list[PostgresCommitter] = []
        self._listener: Listener | None = None
        # backends of this world's own connections: their NOTIFYs are already handled
        # locally (after each commit), so the listener skips them
        self._own_pids: set[int] = set()

    @property
    def commits(self) -> int:
        """Batches the group-commit writer committed (each one transaction)."""
        return sum(writer.queue.commits for writer in self._writers)

    def _queue_key(self, queue: str) -> str:
        return f"{self.job_prefix}/{queue}"

    # -- lifecycle -------------------------------------------------------------------
    async def _connect(self) -> asyncpg.Connection:
        try:
            conn = await asyncpg.connect(self.connection_string, timeout=self.connect_timeout)
            self._own_pids.add(conn.get_server_pid())
            return conn
        except (OSError, TimeoutError) as exc:
            raise WorldError(self._unreachable(exc)) from None
        except asyncpg.PostgresError as exc:
            raise WorldError(f"Postgres world ({self.address}): {exc}") from None

    def _unreachable(self, exc: BaseException) -> str:
        """Why the server could not be reached, naming host, port (and the timeout)."""
        if isinstance(exc, TimeoutError):
            return (f"Postgres world: cannot reach the server at {self.address}: no answer "
                    f"within connect_timeout={self.connect_timeout:g}s")
        return (f"Postgres world: cannot reach the server at {self.address}: "
                f"{exc or type(exc).__name__}")

    async def _open(self) -> None:
        conn = await self._connect()
        try:
            await setup_schema(conn)
        finally:
            await conn.close()
        try:
            self._pool = await asyncpg.create_pool(
                self.connection_string, min_size=1, max_size=self.pool_size,
                timeout=self.connect_timeout, init=self._init_pooled,
                connection_class=_PooledConnection)
        except (TimeoutError, OSError) as exc:
            raise WorldError(self._unreachable(exc)) from None
        except asyncpg.PostgresError as exc:
            raise WorldError(f"Postgres world ({self.address}): {exc}") from None
        for _ in range(self.writers):
            writer = PostgresCommitter(self._connect, self.channel)
            self._writers.append(writer)
            await writer.start()
        self._listener = Listener(self._connect, self.channel, self._on_notice,
                                  self.notify_work)
        await self._listener.start()

    async def _close(self) -> None:
        listener, writers, pool = self._listener, self._writers, self._pool
        self._listener = self._pool = None
        self._writers = []
        if listener is not None:
            await listener.close()
        for writer in writers:
            await writer.close()
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5)
            except (TimeoutError, *CONNECTION_ERRORS):
                pool.terminate()

    async def _init_pooled(self, conn: asyncpg.Connection) -> None:
        self._own_pids.add(conn.get_server_pid())

    def _on_notice(self, pid: int, notice: Notice) -> None:
        if pid in self._own_pids:
            return
        match notice:
            case WorkAvailable():
                self.notify_work()
            case InboxChanged(run_id=run_id):
                self._signal_inbox(run_id)
            case RunEnded(run_id=run_id):
                self._signal_finished(run_id)
            case StreamChanged(run_id=run_id, name=name):
                self.notify_stream(run_id, name)
            case SlotReleased(queue=queue):
                self.notify_slot(queue)

    async def _notify(self, c: asyncpg.Connection, notice: Notice,
                      channel: str | None = None) -> None:
        await c.execute(sql.NOTIFY, channel or self.channel, encode_notice(notice))

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], *,
                   transaction: bool = False) -> T:
        """Run `fn` on a pooled connection; wait out a server restart (reconnecting)."""
        if self._pool is None:
            raise WorldError("the Postgres world is not open; use `async with world` or "
                             "`await world.open()` first")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_FOR
        delay = 0.05
        while True:
            pool = self._pool
            if pool is None:
                raise WorldError("the Postgres world is closed")
            try:
                async with pool.acquire(timeout=self.connect_timeout) as conn:
                    if transaction:
                        async with conn.transaction():
                            return await fn(conn)
                    return await fn(conn)
            except WorldflowError:
                raise
            except CONNECTION_ERRORS as exc:
                if loop.time() > deadline:
                    raise WorldError(f"Postgres world: the server at {self.address} is "
                                     f"unreachable: {exc}") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except asyncpg.PostgresError as exc:
                raise WorldError(f"Postgres world ({self.address}): "
                                 f"{type(exc).__name__}: {exc}") from None

    def _require_writer(self, run_id: str) -> PostgresCommitter:
        """The writer of `run_id`: all of a run's writes go through one writer, in order
        (with several writers, runs are shared out by a hash of their id)."""
        writers = self._writers
        if not writers:
            raise WorldError("the Postgres world is not open; use `async with world` or "
                             "`await world.open()` first")
        if len(writers) == 1:
            return writers[0]
        return writers[zlib.crc32(run_id.encode()) % len(writers)]
