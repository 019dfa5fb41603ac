"""The Postgres world: many processes on many machines share one database.

Writes of the hot path (created runs, appended events) go through one group-commit
writer (writer.py): one round trip and one transaction for a whole batch of runs.
Queue operations and reads use a connection pool. Claims take rows with
`FOR UPDATE SKIP LOCKED` and a lease; wake-ups travel by LISTEN/NOTIFY on one channel
per job prefix (its own connection: a pooled one would lose its LISTEN on release).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import zlib
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import asyncpg
from msgspec import Raw

from worldflow.core.events import EventRecord, RunCreated, encode_event
from worldflow.core.records import (
    HookRecord,
    InboxRecord,
    Page,
    RunRecord,
    RunStatus,
    ScheduleRecord,
    StepRecord,
    StepStatus,
    StreamChunk,
    corrupt_run,
)
from worldflow.core.world import BaseWorld
from worldflow.errors import (
    CorruptRecordError,
    HookNotFoundError,
    RunFinishedError,
    RunNotFoundError,
    WorldError,
    WorldflowError,
)
from worldflow.worlds.cursor import decode_cursor, encode_cursor
from worldflow.worlds.postgres import schedules, sql
from worldflow.worlds.postgres.codec import (
    BAD_ROW,
    corrupt_row,
    decode_error,
    decode_event_row,
    decode_tags,
)
from worldflow.worlds.postgres.listener import Listener
from worldflow.worlds.postgres.messages import (
    AppendWrite,
    ApplyOutcome,
    CreateRunWrite,
    EventRow,
    InboxChanged,
    Notice,
    RunEnded,
    SlotReleased,
    StreamChanged,
    WorkAvailable,
    encode_notice,
)
from worldflow.worlds.postgres.schema import setup_schema
from worldflow.worlds.postgres.slots import acquire_slot
from worldflow.worlds.postgres.writer import CONNECTION_ERRORS, PostgresCommitter
from worldflow.worlds.projection import plan_append

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

    from worldflow.core.records import NewRun

__all__ = ["PostgresWorld"]

logger = logging.getLogger("worldflow.world.postgres")
T = TypeVar("T")
_PREFIX = re.compile(r"^[A-Za-z0-9_]{1,40}$")
TERMINAL = ("completed", "failed", "cancelled", "continued")
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


class PostgresWorld(BaseWorld):
    """Runs, logs and the queue in Postgres (see README: ARCHITECTURE)."""

    name = "postgres"
    finish_poll_interval = 5.0  # NOTIFY brings run ends; polling is only a fallback

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

    # -- runs and the log ---------------------------------------------------------------
    async def create_run(self, run: NewRun, *, lease_owner: str | None,
                         lease_seconds: float) -> tuple[RunRecord, bool]:
        now = self.now()
        write = CreateRunWrite(
            run_id=run.run_id, workflow_name=run.workflow_name, input=run.input,
            created_at=run.created_at, queue=run.queue, dedup_key=run.dedup_key,
            parent_run_id=run.parent_run_id, tags=dict(run.tags) or None,
            job_prefix=self.job_prefix,
            payload=Raw(encode_event(RunCreated(run.workflow_name, run.input,
                                                trace_context=run.trace_context))),
            lease_owner=lease_owner, now=now,
            lease_expires_at=(None if lease_owner is None
                              else now + dt.timedelta(seconds=lease_seconds)))

        def after(outcome: ApplyOutcome) -> None:
            if outcome.created and lease_owner is None:
                self.notify_work()

        queue = self._require_writer(run.run_id).queue
        outcome: ApplyOutcome = await queue.write(write, after=after)
        if outcome.created:
            record = RunRecord(run.run_id, run.workflow_name, RunStatus.PENDING, run.input,
                               None, None, run.created_at, None, None, run.created_at,
                               run.queue, run.parent_run_id, tags=dict(run.tags))
            return record, True
        assert outcome.run_id is not None
        existing = await self.get_run(outcome.run_id)
        assert existing is not None
        return existing, False

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._run(lambda c: c.fetchrow(sql.GET_RUN, run_id))
        return None if row is None else _run_record(row)

    async def list_runs(self, *, status: str | None = None, workflow_name: str | None = None,
                        limit: int = 50, cursor: str | None = None,
                        tags: Mapping[str, str] | None = None,
                        since: dt.datetime | None = None) -> Page:
        after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
        pairs = list(tags.items()) if tags else []
        query, names = sql.LIST_RUNS_BY_FILTER[
            status is not None, workflow_name is not None, after_at is not None,
            since is not None, min(len(pairs), 2)]
        values: dict[str, object] = {
            "status": None if status is None else str(status), "name": workflow_name,
            "after_at": after_at, "after_id": after_id, "since": since,
            "limit": limit + 1,
            "tag_key": pairs[0][0] if pairs else None,
            "tag_value": pairs[0][1] if pairs else None,
            "tag_keys": [key for key, _ in pairs], "tag_values": [v for _, v in pairs]}
        args = [values[name] for name in names]
        rows = await self._run(lambda c: c.fetch(query, *args))
        items = [_run_record_or_placeholder(r) for r in rows[:limit]]
        nxt = (encode_cursor(items[-1].created_at, items[-1].run_id)
               if len(rows) > limit and items else None)
        return Page(items, nxt)

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        rows = await self._run(lambda c: c.fetch(sql.LIST_STEPS, run_id))
        return [_step_record(r) for r in rows]

    async def list_events(self, run_id: str, *, after_seq: int = -1,
                          limit: int | None = None) -> list[EventRecord]:
        rows = await self._run(lambda c: c.fetch(sql.LIST_EVENTS, run_id, after_seq, limit))
        return [decode_event_row(run_id, r) for r in rows]

    async def append_events(self, run_id: str, records: Sequence[EventRecord], *,
                            inbox_ids: Sequence[int] = (), wait: bool = True) -> None:
        records = list(records)
        plan = plan_append(records)
        write = AppendWrite(
            run_id=run_id, ops=plan.ops, inbox_ids=list(inbox_ids),
            finished_at=plan.finished_at,
            events=[EventRow(r.seq, r.event_type, r.correlation_id,
                             Raw(encode_event(r.event)), r.created_at) for r in records])

        def after(_outcome: ApplyOutcome) -> None:
            if plan.finishes:
                self._signal_finished(run_id)

        queue = self._require_writer(run_id).queue
        if wait:
            await queue.write(write, fence=run_id, after=after)
        else:
            queue.write_nowait(write, fence=run_id, after=after)

    # -- queue ---------------------------------------------------------------------------
    async def claim_runs(self, owner: str, limit: int, lease_seconds: float, *,
                         workflows: Collection[str] | None = None) -> list[str]:
        if limit <= 0:
            return []
        now = self.now()
        expires = now + dt.timedelta(seconds=lease_seconds)
        prefix = self.job_prefix
        names = None if workflows is None else sorted(workflows)

        async def claim(c: asyncpg.Connection) -> list[str]:
            if names is None:
                if not await c.fetchval(sql.ANY_CLAIMABLE, prefix, now):
                    return []
                rows = await c.fetch(sql.CLAIM_READY, prefix, now, limit, owner, expires)
                if len(rows) < limit:
                    rows += await c.fetch(sql.CLAIM_EXPIRED, prefix, now,
                                          limit - len(rows), owner, expires)
                return [r[0] for r in rows]
            if not await c.fetchval(sql.ANY_CLAIMABLE_OF, prefix, now, names):
                return []
            rows = await c.fetch(sql.CLAIM_READY_OF, prefix, now, limit, owner, expires,
                                 names)
            if len(rows) < limit:
                rows += await c.fetch(sql.CLAIM_CANCEL_PENDING, prefix, now,
                                      limit - len(rows), owner, expires)
            if len(rows) < limit:
                rows += await c.fetch(sql.CLAIM_EXPIRED_OF, prefix, now, limit - len(rows),
                                      owner, expires, names)
            return [r[0] for r in rows]

        return await self._run(claim, transaction=True)

    async def renew_leases(self, owner: str, lease_seconds: float) -> set[str]:
        expires = self.now() + dt.timedelta(seconds=lease_seconds)
        rows = await self._run(lambda c: c.fetch(sql.RENEW_LEASES, self.job_prefix, owner,
                                                 expires))
        return {r[0] for r in rows}

    async def release_run(self, run_id: str, owner: str, wake_at: dt.datetime | None, *,
                          backoff: bool = False) -> None:
        now = self.now()

        async def release(c: asyncpg.Connection) -> None:
            await c.execute(sql.LOCK_JOB, run_id)
            available = await c.fetchval(sql.RELEASE_JOB, run_id, now, wake_at, owner,
                                         backoff)
            if available is not None and available <= now:
                await self._notify(c, WorkAvailable())

        await self._run(release, transaction=True)
        self.notify_work()

    async def expire_leases(self, owners: Sequence[str]) -> int:
        if not owners:
            return 0
        status = await self._run(lambda c: c.execute(sql.EXPIRE_LEASES, self.job_prefix,
                                                     self.now(), list(owners)))
        count = int(status.split()[-1])
        if count:
            self.notify_work()
        return count

    async def lease_owners(self) -> list[str]:
        rows = await self._run(lambda c: c.fetch(sql.LEASE_OWNERS, self.job_prefix))
        return [r[0] for r in rows]

    async def next_wake_at(self, *, workflows: Collection[str] | None = None
                           ) -> dt.datetime | None:
        names = None if workflows is None else sorted(workflows)
        value: dt.datetime | None = await self._run(
            lambda c: c.fetchval(sql.NEXT_WAKE, self.job_prefix) if names is None
            else c.fetchval(sql.NEXT_WAKE_OF, self.job_prefix, names))
        return value

    # -- input from outside ----------------------------------------------------------------
    async def _push_inbox(self, c: asyncpg.Connection, run_id: str, kind: str,
                          token: str | None, payload: Raw | None) -> None:
        now = self.now()
        await c.execute(sql.LOCK_JOB, run_id)
        await c.execute(sql.INSERT_INBOX, run_id, kind, token,
                        None if payload is None else bytes(payload).decode(), now)
        wake = sql.WAKE_JOB_TO_CANCEL if kind == "cancel" else sql.WAKE_JOB
        prefix = await c.fetchval(wake, now, run_id)
        await self._notify(c, InboxChanged(run_id))
        if prefix is not None and prefix != self.job_prefix:
            await self._notify(c, InboxChanged(run_id), f"worldflow_{prefix.lower()}")

    async def request_cancel(self, run_id: str) -> bool:
        async def cancel(c: asyncpg.Connection) -> bool:
            status = await c.fetchval(sql.RUN_STATUS, run_id)
            if status is None:
                raise RunNotFoundError(f"run not found: {run_id}")
            if status in TERMINAL:
                return False
            await self._push_inbox(c, run_id, "cancel", None, None)
            return True

        queued = await self._run(cancel, transaction=True)
        if queued:
            self._signal_inbox(run_id)
        return queued

    async def resume_hook(self, token: str, payload: Raw) -> str:
        async def resume(c: asyncpg.Connection) -> str:
            row = await c.fetchrow(sql.HOOK_RUN, token)
            if row is None or row[1] != "active":
                raise HookNotFoundError(f"hook not found: {token!r} (unknown or disposed)")
            if row[2] in TERMINAL:
                raise RunFinishedError(f"run {row[0]} has finished; hook {token!r} takes "
                                       f"no more payloads")
            await self._push_inbox(c, row[0], "hook", token, payload)
            return str(row[0])

        run_id = await self._run(resume, transaction=True)
        self._signal_inbox(run_id)
        return run_id

    async def send_message(self, run_id: str, topic: str, payload: Raw) -> None:
        async def send(c: asyncpg.Connection) -> None:
            status = await c.fetchval(sql.RUN_STATUS, run_id)
            if status is None:
                raise RunNotFoundError(f"run not found: {run_id}")
            if status in TERMINAL:
                raise RunFinishedError(f"run {run_id} is {status}; it takes no more "
                                       f"messages")
            await self._push_inbox(c, run_id, "message", topic, payload)

        await self._run(send, transaction=True)
        self._signal_inbox(run_id)

    async def child_ended(self, parent_run_id: str, child_run_id: str) -> None:
        async def tell(c: asyncpg.Connection) -> bool:
            status = await c.fetchval(sql.RUN_STATUS, parent_run_id)
            if status is None or status in TERMINAL:
                return False
            await self._push_inbox(c, parent_run_id, "child_ended", child_run_id, None)
            return True

        if await self._run(tell, transaction=True):
            self._signal_inbox(parent_run_id)

    async def read_inbox(self, run_id: str) -> list[InboxRecord]:
        rows = await self._run(lambda c: c.fetch(sql.READ_INBOX, run_id))
        return [InboxRecord(r[0], r[1], r[2], r[3], _raw(r[4]), r[5]) for r in rows]

    async def get_hook(self, token: str) -> HookRecord | None:
        row = await self._run(lambda c: c.fetchrow(sql.GET_HOOK, token))
        return None if row is None else _hook_record(row)

    async def list_hooks(self, run_id: str | None = None) -> list[HookRecord]:
        rows = await self._run(lambda c: c.fetch(sql.LIST_HOOKS, run_id))
        return [_hook_record(r) for r in rows]

    # -- queue slots ------------------------------------------------------------------------
    async def acquire_slot(self, queue: str, holder: str, *, concurrency: int | None,
                           rate_limit: tuple[int, float] | None, priority: int,
                           lease_seconds: float) -> float | None:
        key = self._queue_key(queue)
        return await self._run(lambda c: acquire_slot(c, key, holder, concurrency, rate_limit,
                                                      priority, lease_seconds, self.now),
                               transaction=True)

    async def release_slot(self, queue: str, holder: str) -> None:
        key = self._queue_key(queue)

        async def release(c: asyncpg.Connection) -> None:
            await c.execute(sql.DELETE_SLOT, key, holder)
            await c.execute(sql.DELETE_WAITER, key, holder)
            await self._notify(c, SlotReleased(queue))

        await self._run(release, transaction=True)
        self.notify_slot(queue)

    async def renew_slots(self, holder_prefix: str, lease_seconds: float) -> None:
        expires = self.now() + dt.timedelta(seconds=lease_seconds)
        await self._run(lambda c: c.execute(sql.RENEW_SLOTS, expires, holder_prefix,
                                            self.job_prefix + "/"))

    # -- streams ------------------------------------------------------------------------------
    async def write_stream(self, run_id: str, name: str, chunks: Sequence[tuple[int, Raw]],
                           *, close: bool = False) -> None:
        now = self.now()

        async def write(c: asyncpg.Connection) -> None:
            if await c.fetchval(sql.STREAM_RUN_EXISTS, run_id) is None:
                raise RunNotFoundError(f"run not found: {run_id}")
            await c.execute(sql.STREAM_HEAD, run_id, name)
            length = await c.fetchval(sql.STREAM_LENGTH, run_id, name)
            for index, data in chunks:
                if index > length:
                    raise ValueError(f"stream {name!r}: chunk {index} written before "
                                     f"chunk {length}")
                if index == length:
                    await c.execute(sql.INSERT_CHUNK, run_id, name, index,
                                    bytes(data).decode(), now)
                    length += 1
            await c.execute(sql.SET_STREAM_HEAD, run_id, name, length, close)
            await self._notify(c, StreamChanged(run_id, name))

        await self._run(write, transaction=True)
        self.notify_stream(run_id, name)

    async def read_stream(self, run_id: str, name: str, start: int = 0,
                          limit: int = 1000) -> tuple[list[StreamChunk], bool]:
        async def read(c: asyncpg.Connection) -> tuple[list[StreamChunk], bool]:
            closed = bool(await c.fetchval(sql.STREAM_CLOSED, run_id, name))
            rows = await c.fetch(sql.READ_STREAM, run_id, name, start, limit)
            return [StreamChunk(run_id, name, r[0], _raw(r[1]) or Raw(b"null"), r[2])
                    for r in rows], closed

        return await self._run(read, transaction=True)

    async def list_streams(self, run_id: str) -> list[tuple[str, int, bool]]:
        rows = await self._run(lambda c: c.fetch(sql.LIST_STREAMS, run_id))
        return [(r[0], r[1], r[2]) for r in rows]

    # -- schedules --------------------------------------------------------------------------
    async def put_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord:
        return await self._run(lambda c: schedules.put_schedule(c, self.job_prefix, schedule))

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        return await self._run(lambda c: schedules.get_schedule(c, self.job_prefix,
                                                                schedule_id))

    async def list_schedules(self) -> list[ScheduleRecord]:
        return await self._run(lambda c: schedules.list_schedules(c, self.job_prefix))

    async def set_schedule_paused(self, schedule_id: str, paused: bool
                                  ) -> ScheduleRecord | None:
        now = self.now()
        return await self._run(lambda c: schedules.set_schedule_paused(
            c, self.job_prefix, schedule_id, paused, now))

    async def delete_schedule(self, schedule_id: str) -> bool:
        return await self._run(lambda c: schedules.delete_schedule(c, self.job_prefix,
                                                                   schedule_id))

    async def advance_schedule(self, schedule_id: str, expected_last_tick: dt.datetime,
                               new_last_tick: dt.datetime) -> bool:
        return await self._run(lambda c: schedules.advance_schedule(
            c, self.job_prefix, schedule_id, expected_last_tick, new_last_tick))

    def __repr__(self) -> str:
        return f"<PostgresWorld {self.address} prefix={self.job_prefix}>"


def _raw(text: str | None) -> Raw | None:
    return None if text is None else Raw(text.encode())


def _run_record(row: asyncpg.Record) -> RunRecord:
    """A run; `CorruptRecordError` naming it if its row cannot be decoded."""
    try:
        return RunRecord(row[0], row[1], RunStatus(row[2]), Raw(row[3].encode()),
                         _raw(row[4]), decode_error(row[5]), row[6], row[7], row[8], row[9],
                         row[10], row[11],
                         tags=decode_tags(row[12]),
                         steps_total=row[13], steps_completed=row[14],
                         steps_failed=row[15], steps_running=row[16])
    except BAD_ROW as exc:
        raise corrupt_row("workflow_runs", row[0], row[0], exc) from None


def _run_record_or_placeholder(row: asyncpg.Record) -> RunRecord:
    """For listings: a corrupt row becomes a placeholder, so it hides no other run."""
    try:
        return _run_record(row)
    except CorruptRecordError as exc:
        return corrupt_run(row[0], row[1], row[6], str(exc))


def _step_record(r: asyncpg.Record) -> StepRecord:
    try:
        return StepRecord(r[0], r[1], r[2], r[3], StepStatus(r[4]), r[5], _raw(r[6]),
                          _raw(r[7]), decode_error(r[8]), r[9], r[10])
    except BAD_ROW as exc:
        raise corrupt_row("workflow_steps", r[0], r[1], exc) from None


def _hook_record(row: asyncpg.Record) -> HookRecord:
    return HookRecord(row[0], row[1], row[2], row[3], row[4], row[5], _raw(row[6]))
