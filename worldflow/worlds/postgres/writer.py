"""Group commit for Postgres: many runs' writes, one round trip, one transaction.

Callers queue a write (a small dict: a created run, or appended events with their
projection ops) with a future. The writer task takes everything queued and sends it as
one call of the server-side function `worldflow_apply` (functions.sql): a single
statement, so a single implicit transaction and a single round trip however many runs
it carries. Each caller's future resolves after that commit, so a step's completion is
durable before the workflow acts on it; on the live path a step costs one such write,
shared with every other run that wrote meanwhile.

If the connection breaks, the writer reconnects and sends the same batch again. That
is safe when the first attempt's commit is unknown: a created run is found by its id,
and an append whose first event is already stored (same seq, type and time) counts as
done.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from worldflow.errors import HookConflictError, LeaseLostError, RunNotFoundError, WorldError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["GroupCommitWriter"]

logger = logging.getLogger("worldflow.world.postgres")

APPLY = "SELECT worldflow_apply($1::json, $2)"
MAX_BATCH = 1000
#: seconds writes nobody awaits may wait for a write that is awaited, to share its commit
LINGER = 0.002
# the server is away (restarting, shutting down, unreachable): retry, never fail the write
CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                     asyncpg.exceptions.OperatorInterventionError, ConnectionError,
                     asyncio.TimeoutError,
                     # raised by a connection that broke in the middle of an operation
                     asyncpg.exceptions.InternalClientError)
_decode_outcomes = msgspec.json.Decoder(list[dict[str, Any]])
_encode = msgspec.json.Encoder()


class _Write:
    __slots__ = ("after", "body", "fence", "future")

    def __init__(self, body: dict[str, Any], future: asyncio.Future[Any] | None,
                 after: Callable[[dict[str, Any]], None] | None, fence: str | None) -> None:
        self.body = body
        self.future = future
        self.after = after
        self.fence = fence


class GroupCommitWriter:
    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]],
                 channel: str) -> None:
        self._connect = connect
        self._channel = channel
        self._conn: asyncpg.Connection | None = None
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._poisoned: dict[str, BaseException] = {}
        #: transactions (batches) committed, and writes they carried
        self.commits = 0
        self.writes = 0

    @property
    def server_pid(self) -> int | None:
        return None if self._conn is None else self._conn.get_server_pid()

    async def start(self) -> None:
        self._conn = await self._connect()
        self._task = asyncio.get_running_loop().create_task(self._run(),
                                                            name="worldflow-postgres-writer")

    async def write(self, body: dict[str, Any], *, fence: str | None = None,
                    after: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._put(_Write(body, future, after, fence))
        return await future

    def write_nowait(self, body: dict[str, Any], *, fence: str | None = None,
                     after: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._put(_Write(body, None, after, fence))

    def _put(self, write: _Write) -> None:
        if self._closing or self._task is None or self._task.done():
            raise WorldError("the Postgres world is closed; open it first "
                             "(await world.open() or async with world)")
        self._queue.put_nowait(write)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None and not self._task.done():
            self._queue.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 10)
            except TimeoutError:
                self._task.cancel()
        if self._conn is not None:
            try:
                await asyncio.wait_for(self._conn.close(), 5)
            except (TimeoutError, *CONNECTION_ERRORS):
                self._conn.terminate()
            self._conn = None

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            stopping = self._drain(batch)
            if not stopping and all(w.future is None for w in batch):
                # nobody waits for these (e.g. a step_started): give the awaited write
                # that usually follows a moment to share their round trip
                try:
                    async with asyncio.timeout(LINGER):
                        item = await self._queue.get()
                except TimeoutError:
                    pass
                else:
                    if item is None:
                        stopping = True
                    else:
                        batch.append(item)
                        stopping = self._drain(batch)
            live = [w for w in batch if not self._fenced_out(w)]
            if not live:
                continue
            try:
                outcomes = await self._send(live)
            except Exception as exc:  # the writer must outlive any one batch
                logger.exception("a Postgres write batch failed")
                outcomes = [{"ok": False, "e": "world", "m": f"{type(exc).__name__}: {exc}"}
                            for _ in live]
            self._resolve(live, outcomes)

    def _drain(self, batch: list[_Write]) -> bool:
        """Add what is queued to `batch`; True if the writer was told to stop."""
        while len(batch) < MAX_BATCH and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                return True
            batch.append(item)
        return False

    def _fenced_out(self, write: _Write) -> bool:
        if write.fence is None or write.fence not in self._poisoned:
            return False
        earlier = (self._poisoned.pop(write.fence) if write.future is not None
                   else self._poisoned[write.fence])
        if write.future is not None and not write.future.done():
            write.future.set_exception(LeaseLostError(
                f"run {write.fence}: an earlier append failed: {earlier}"))
        return True

    async def _send(self, batch: list[_Write]) -> list[dict[str, Any]]:
        payload = _encode.encode([w.body for w in batch]).decode()
        delay = 0.05
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    try:
                        self._conn = await self._connect()
                    except WorldError as exc:  # the world's wording of a connect failure
                        raise ConnectionError(str(exc)) from None
                result = await self._conn.fetchval(APPLY, payload, self._channel)
                self.commits += 1
                self.writes += len(batch)
                return _decode_outcomes.decode(result)
            except CONNECTION_ERRORS as exc:
                if self._closing and delay > 2:
                    error = WorldError(f"Postgres world: writes lost at close: {exc}")
                    return [{"ok": False, "e": "world", "m": str(error)} for _ in batch]
                logger.warning("Postgres write failed (%s); reconnecting in %.2fs", exc, delay)
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except asyncpg.PostgresError as exc:
                return [{"ok": False, "e": "world", "m": f"{type(exc).__name__}: {exc}"}
                        for _ in batch]

    def _resolve(self, batch: list[_Write], outcomes: list[dict[str, Any]]) -> None:
        for write, outcome in zip(batch, outcomes, strict=True):
            if outcome.get("ok"):
                if write.after is not None:
                    try:
                        write.after(outcome)
                    except Exception:
                        logger.exception("wake-up after a commit failed")
                if write.future is not None and not write.future.done():
                    write.future.set_result(outcome)
                continue
            error = _error(outcome)
            if write.future is None:
                logger.warning("a queued write failed: %s", error)
                if write.fence is not None:
                    self._poisoned.setdefault(write.fence, error)
            elif not write.future.done():
                write.future.set_exception(error)


def _error(outcome: dict[str, Any]) -> Exception:
    message = str(outcome.get("m", "write failed"))
    kind = outcome.get("e")
    if kind == "lease_lost":
        return LeaseLostError(message)
    if kind == "hook_conflict":
        return HookConflictError(message)
    if kind == "not_found":
        return RunNotFoundError(message)
    return WorldError(f"Postgres world: {message}")
