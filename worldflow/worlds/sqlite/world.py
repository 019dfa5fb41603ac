"""The SQLite world: one file, WAL mode, group-committed writes. Survives restarts.

Each `World` method here is one read or one group-committed write of a function from
the modules beside it (log, queue, reads, schedules, streams), plus the in-process
wake-up it owes once that commits. How the file is opened, written and read (the
writer, the read connections, PRAGMAs, closing) is `SQLiteConnections`, in
worldflow.worlds.sqlite.connections, which `SQLiteWorld` builds on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worldflow.worlds.sqlite import log, reads, schedules, streams
from worldflow.worlds.sqlite import queue as _queue
from worldflow.worlds.sqlite.connections import SQLiteConnections

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Collection, Mapping, Sequence

    from msgspec import Raw

    from worldflow.core.events import EventRecord
    from worldflow.core.records import (
        HookRecord,
        InboxRecord,
        NewRun,
        Page,
        RunRecord,
        ScheduleRecord,
        StepRecord,
        StreamChunk,
    )

__all__ = ["SQLiteWorld"]


class SQLiteWorld(SQLiteConnections):
    """Runs, logs and the queue in one SQLite file (default ``.worldflow/worldflow.db``).

    `synchronous` is SQLite's ``PRAGMA synchronous``: ``FULL`` (the default) makes every
    commit durable across a power loss; ``NORMAL`` may lose the last commits then, but
    never corrupts the file.

    `read_only=True` opens the file for reading only (``mode=ro``; on a read-only mount
    without the WAL's side files, ``immutable=1``): every read works, every write
    raises `WorldError`. The CLI opens a file it cannot write this way.
    """

    name = "sqlite"

    # -- runs and the event log ----------------------------------------------------
    async def create_run(self, run: NewRun, *, lease_owner: str | None,
                         lease_seconds: float) -> tuple[RunRecord, bool]:
        def after(result: tuple[RunRecord, bool]) -> None:
            if result[1] and lease_owner is None:
                self.notify_work()

        return await self._write(log.create_run, run, lease_owner, lease_seconds, self.now(),
                                 after=after)

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self._read(reads.get_run, run_id)

    async def list_runs(self, *, status: str | None = None, workflow_name: str | None = None,
                        limit: int = 50, cursor: str | None = None,
                        tags: Mapping[str, str] | None = None,
                        since: dt.datetime | None = None) -> Page:
        return await self._read(reads.list_runs, status, workflow_name, limit, cursor,
                                tags, since)

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        return await self._read(reads.list_steps, run_id)

    async def list_events(self, run_id: str, *, after_seq: int = -1,
                          limit: int | None = None) -> list[EventRecord]:
        return await self._read(reads.list_events, run_id, after_seq, limit)

    async def append_events(self, run_id: str, records: Sequence[EventRecord], *,
                            inbox_ids: Sequence[int] = (), wait: bool = True) -> None:
        records, inbox_ids = list(records), list(inbox_ids)  # the caller may reuse its lists

        def after(finished: bool) -> None:
            if finished:
                self._signal_finished(run_id)

        apply = log.Append(run_id, records, inbox_ids)
        # fenced by run: if a queued append fails, the run's next append fails too, so
        # a later append never commits past a lost one
        if wait:
            await self._require_writer().write(apply, after=after, fence=run_id)
        else:
            self._require_writer().write_nowait(apply, after=after, fence=run_id)

    # -- queue -----------------------------------------------------------------------
    async def claim_runs(self, owner: str, limit: int, lease_seconds: float, *,
                         workflows: Collection[str] | None = None) -> list[str]:
        names = None if workflows is None else frozenset(workflows)
        # an idle poll only reads: the write lock is taken when there is work to lease
        if limit <= 0 or not await self._read(reads.any_claimable, self.now(), names):
            return []
        return await self._write(_queue.claim_runs, owner, limit, lease_seconds, self.now(),
                                 names)

    async def renew_leases(self, owner: str, lease_seconds: float) -> set[str]:
        return await self._write(_queue.renew_leases, owner, lease_seconds, self.now())

    async def release_run(self, run_id: str, owner: str, wake_at: dt.datetime | None, *,
                          backoff: bool = False) -> None:
        await self._write(_queue.release_run, run_id, owner, wake_at, self.now(), backoff,
                          after=self._notify_if)

    async def expire_leases(self, owners: Sequence[str]) -> int:
        if not owners:
            return 0
        return await self._write(_queue.expire_leases, list(owners), self.now(),
                                 after=self._notify_if)

    def _notify_if(self, available: object) -> None:
        if available:
            self.notify_work()

    async def lease_owners(self) -> list[str]:
        return await self._read(reads.lease_owners)

    async def next_wake_at(self, *, workflows: Collection[str] | None = None
                           ) -> dt.datetime | None:
        names = None if workflows is None else frozenset(workflows)
        return await self._read(reads.next_wake_at, names)

    # -- input from outside a run -------------------------------------------------
    async def request_cancel(self, run_id: str) -> bool:
        def after(queued: bool) -> None:
            if queued:
                self._signal_inbox(run_id)

        return await self._write(_queue.request_cancel, run_id, self.now(), after=after)

    async def resume_hook(self, token: str, payload: Raw) -> str:
        return await self._write(_queue.resume_hook, token, payload, self.now(),
                                 after=self._signal_inbox)

    async def send_message(self, run_id: str, topic: str, payload: Raw) -> None:
        await self._write(_queue.send_message, run_id, topic, payload, self.now(),
                          after=self._signal_inbox)

    async def child_ended(self, parent_run_id: str, child_run_id: str) -> None:
        def after(queued: str | None) -> None:
            if queued is not None:
                self._signal_inbox(queued)

        await self._write(_queue.child_ended, parent_run_id, child_run_id, self.now(),
                          after=after)

    async def read_inbox(self, run_id: str) -> list[InboxRecord]:
        return await self._read(reads.read_inbox, run_id)

    async def get_hook(self, token: str) -> HookRecord | None:
        return await self._read(reads.get_hook, token)

    async def list_hooks(self, run_id: str | None = None) -> list[HookRecord]:
        return await self._read(reads.list_hooks, run_id)

    # -- queue slots ---------------------------------------------------------------
    async def acquire_slot(self, queue: str, holder: str, *, concurrency: int | None,
                           rate_limit: tuple[int, float] | None, priority: int,
                           lease_seconds: float) -> float | None:
        return await self._write(_queue.acquire_slot, queue, holder, concurrency, rate_limit,
                                 priority, lease_seconds, self.now())

    async def release_slot(self, queue: str, holder: str) -> None:
        await self._write(_queue.release_slot, queue, holder,
                          after=lambda _: self.notify_slot(queue))

    async def renew_slots(self, holder_prefix: str, lease_seconds: float) -> None:
        await self._write(_queue.renew_slots, holder_prefix, lease_seconds, self.now())

    # -- streams -------------------------------------------------------------------
    async def write_stream(self, run_id: str, name: str, chunks: Sequence[tuple[int, Raw]],
                           *, close: bool = False) -> None:
        await self._write(streams.write_stream, run_id, name, list(chunks), close, self.now(),
                          after=lambda _: self.notify_stream(run_id, name))

    async def read_stream(self, run_id: str, name: str, start: int = 0,
                          limit: int = 1000) -> tuple[list[StreamChunk], bool]:
        return await self._read(reads.read_stream, run_id, name, start, limit)

    async def list_streams(self, run_id: str) -> list[tuple[str, int, bool]]:
        return await self._read(reads.list_streams, run_id)

    # -- schedules -------------------------------------------------------------------
    async def put_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord:
        return await self._write(schedules.put_schedule, schedule)

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        return await self._read(schedules.get_schedule, schedule_id)

    async def list_schedules(self) -> list[ScheduleRecord]:
        return await self._read(schedules.list_schedules)

    async def set_schedule_paused(self, schedule_id: str, paused: bool
                                  ) -> ScheduleRecord | None:
        return await self._write(schedules.set_schedule_paused, schedule_id, paused,
                                 self.now())

    async def delete_schedule(self, schedule_id: str) -> bool:
        return await self._write(schedules.delete_schedule, schedule_id)

    async def advance_schedule(self, schedule_id: str, expected_last_tick: dt.datetime,
                               new_last_tick: dt.datetime) -> bool:
        return await self._write(schedules.advance_schedule, schedule_id,
                                 expected_last_tick, new_last_tick)

    def __repr__(self) -> str:
        return f"<SQLiteWorld {self.path}>"
