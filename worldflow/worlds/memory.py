"""The memory world: dicts in this process. For tests and throwaway runs.

It is the reference implementation of the `World` protocol: each method applies its
whole change synchronously (no await in between), which makes it atomic and ordered.
This module holds what a run is made of (the run, its log and the projections, the
inbox and hooks, streams, schedules); the queue of runs, their leases and the slots of
named queues are `MemoryQueue` in worldflow.worlds.memory_queue, which `MemoryWorld`
composes.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import TYPE_CHECKING, Any

import msgspec

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
    created_events,
    created_run,
)
from worldflow.core.world import BaseWorld
from worldflow.errors import (
    HookConflictError,
    HookNotFoundError,
    RunFinishedError,
    RunNotFoundError,
)
from worldflow.worlds import projection
from worldflow.worlds.cursor import decode_cursor, encode_cursor
from worldflow.worlds.memory_queue import MemoryQueue, _Job
from worldflow.worlds.projection import ProjectionOp, check_fence, plan_append

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from msgspec import Raw

    from worldflow.core.events import EventRecord
    from worldflow.core.records import NewRun

__all__ = ["MemoryWorld"]


class MemoryWorld(MemoryQueue, BaseWorld):
    """Every record in dicts; nothing survives the process."""

    name = "memory"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._runs: dict[str, RunRecord] = {}
        self._events: dict[str, list[EventRecord]] = {}
        self._steps: dict[str, dict[str, StepRecord]] = {}
        self._hooks: dict[str, HookRecord] = {}
        self._jobs: dict[str, _Job] = {}
        self._inbox: dict[str, list[InboxRecord]] = {}
        self._inbox_ids = itertools.count(1)
        self._streams: dict[tuple[str, str], list[StreamChunk]] = {}
        self._closed_streams: set[tuple[str, str]] = set()
        self._dedup: dict[str, str] = {}
        self._run_dedup: dict[str, str] = {}
        self._run_hooks: dict[str, set[str]] = {}
        self._slots: dict[str, dict[str, dt.datetime]] = {}
        self._slot_grants: dict[str, list[dt.datetime]] = {}
        self._slot_waiters: dict[str, dict[str, tuple[int, dt.datetime, dt.datetime]]] = {}
        self._schedules: dict[str, ScheduleRecord] = {}

    # -- runs and the log ----------------------------------------------------------
    async def create_run(self, run: NewRun, *, lease_owner: str | None,
                         lease_seconds: float) -> tuple[RunRecord, bool]:
        existing = self._runs.get(run.run_id)
        if existing is not None:
            return existing, False
        if run.dedup_key is not None and run.dedup_key in self._dedup:
            return self._runs[self._dedup[run.dedup_key]], False
        record = created_run(run)
        self._runs[run.run_id] = record
        self._events[run.run_id] = created_events(run)
        self._steps[run.run_id] = {}
        now = self.now()
        job = _Job(run.workflow_name, now, now)
        if lease_owner is not None:
            job.lease_owner = lease_owner
            job.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
        self._jobs[run.run_id] = job
        if run.dedup_key is not None:
            self._dedup[run.dedup_key] = run.run_id
            self._run_dedup[run.run_id] = run.dedup_key
        if lease_owner is None:
            self.notify_work()
        return record, True

    async def get_run(self, run_id: str) -> RunRecord | None:
        return self._runs.get(run_id)

    async def list_runs(self, *, status: str | None = None, workflow_name: str | None = None,
                        limit: int = 50, cursor: str | None = None,
                        tags: Mapping[str, str] | None = None,
                        since: dt.datetime | None = None) -> Page:
        after = decode_cursor(cursor) if cursor else None
        runs = sorted(self._runs.values(), key=lambda r: (r.created_at, r.run_id), reverse=True)
        items: list[RunRecord] = []
        for r in runs:
            if after is not None and (r.created_at, r.run_id) >= after:
                continue
            if status is not None and r.status != status:
                continue
            if workflow_name is not None and r.workflow_name != workflow_name:
                continue
            if since is not None and r.created_at < since:
                break  # newest first: every run left is older
            if tags and any(r.tags.get(key) != value for key, value in tags.items()):
                continue
            items.append(r)
            if len(items) > limit:
                break
        more = len(items) > limit
        items = items[:limit]
        nxt = encode_cursor(items[-1].created_at, items[-1].run_id) if more and items else None
        return Page(items, nxt)

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        return list(self._steps.get(run_id, {}).values())

    async def list_events(self, run_id: str, *, after_seq: int = -1,
                          limit: int | None = None) -> list[EventRecord]:
        events = [e for e in self._events.get(run_id, ()) if e.seq > after_seq]
        return events if limit is None else events[:limit]

    async def append_events(self, run_id: str, records: Sequence[EventRecord], *,
                            inbox_ids: Sequence[int] = (), wait: bool = True) -> None:
        log = self._events.get(run_id)
        if log is None:
            raise RunNotFoundError(f"run not found: {run_id}")
        records = list(records)
        check_fence(run_id, log[-1].seq, records)
        plan = plan_append(records)
        for token in plan.new_hook_tokens:
            hook = self._hooks.get(token)
            if hook is not None and hook.status == "active":
                raise HookConflictError(f"hook token {token!r} is already "
                                        f"in use by run {hook.run_id}")
        log.extend(records)
        # (a step started and completed in one append: one change of its record, as the
        # SQL worlds write one row)
        for op, completed in projection.with_completions(plan.ops):
            if completed is None:
                self._apply(op)
            else:
                assert type(op) is projection.StepStarted
                self._step_done(op, completed)
        if inbox_ids:
            ids = set(inbox_ids)
            inbox = [m for m in self._inbox.get(run_id, ()) if m.id not in ids]
            self._inbox[run_id] = inbox
            job = self._jobs.get(run_id)
            if job is not None:
                job.cancel_pending = any(m.kind == "cancel" for m in inbox)
        if plan.finished_at is not None:
            self._jobs.pop(run_id, None)
            self._inbox.pop(run_id, None)
            for token in self._run_hooks.pop(run_id, ()):
                hook = self._hooks[token]
                if hook.run_id == run_id and hook.status == "active":
                    self._hooks[token] = _replace(hook, status="disposed",
                                                  disposed_at=plan.finished_at)
            key = self._run_dedup.pop(run_id, None)
            if key is not None and self._dedup.get(key) == run_id:
                del self._dedup[key]
            self._signal_finished(run_id)

    def _apply(self, op: ProjectionOp) -> None:
        match op:  # the most frequent first
            case projection.StepStarted(step_id=step_id, run_id=run_id, correlation_id=cid,
                                        step_name=step_name, attempt=attempt, input=inp,
                                        at=at):
                steps = self._steps[run_id]
                old = steps.get(cid)
                if old is None:
                    steps[cid] = StepRecord(step_id, run_id, cid, step_name,
                                            StepStatus.RUNNING, attempt, inp, None, None, at,
                                            None)
                else:
                    steps[cid] = _replace(old, status=StepStatus.RUNNING, attempt=attempt,
                                          error=None)
                self._count_step(run_id, None if old is None else old.status, "running")
            case projection.StepCompleted(step_id=step_id, attempt=attempt, output=output,
                                          at=at):
                self._update_step(step_id, status=StepStatus.COMPLETED, attempt=attempt,
                                  output=output, error=None, completed_at=at)
            case projection.RunStarted(run_id=run_id, at=at):
                run = self._runs[run_id]
                self._runs[run_id] = _replace(run, status=RunStatus.RUNNING,
                                              started_at=run.started_at or at, updated_at=at)
            case projection.RunFinished(run_id=run_id, status=status, at=at, output=output,
                                        error=error):
                self._runs[run_id] = _replace(
                    self._runs[run_id], status=RunStatus(status), output=output, error=error,
                    completed_at=at, updated_at=at)
            case projection.StepRetrying(step_id=step_id, attempt=attempt, error=error):
                self._update_step(step_id, status=StepStatus.PENDING, attempt=attempt,
                                  error=error)
            case projection.StepFailed(step_id=step_id, attempt=attempt, error=error, at=at):
                self._update_step(step_id, status=StepStatus.FAILED, attempt=attempt,
                                  error=error, completed_at=at)
            case projection.HookCreated(token=token, run_id=run_id, correlation_id=cid,
                                        at=at, metadata=metadata):
                self._hooks[token] = HookRecord(token, run_id, cid, "active", at,
                                                metadata=metadata)
                self._run_hooks.setdefault(run_id, set()).add(token)
            case projection.HookDisposed(token=token, at=at):
                hook = self._hooks.get(token)
                if hook is not None and hook.status == "active":
                    self._hooks[token] = _replace(hook, status="disposed", disposed_at=at)

    def _step_done(self, started: projection.StepStarted,
                   completed: projection.StepCompleted) -> None:
        """A step's start and its completion in one append: its record made (or, for a
        later attempt, changed to) completed at once, as the two applied one after the
        other would leave it; its run's counters move once."""
        steps = self._steps[started.run_id]
        old = steps.get(started.correlation_id)
        if old is None:
            steps[started.correlation_id] = StepRecord(
                started.step_id, started.run_id, started.correlation_id, started.step_name,
                StepStatus.COMPLETED, completed.attempt, started.input, completed.output,
                None, started.at, completed.at)
        else:
            steps[started.correlation_id] = _replace(
                old, status=StepStatus.COMPLETED, attempt=completed.attempt,
                output=completed.output, error=None, completed_at=completed.at)
        self._count_step(started.run_id, None if old is None else old.status,
                         StepStatus.COMPLETED)

    def _update_step(self, step_id: str, **changes: Any) -> None:
        run_id, cid = step_id.rsplit(":", 1)
        steps = self._steps[run_id]
        old_status = steps[cid].status
        steps[cid] = _replace(steps[cid], **changes)
        self._count_step(run_id, old_status, steps[cid].status)

    def _count_step(self, run_id: str, old_status: str | None, new_status: str) -> None:
        key = (old_status, new_status)
        changes = _COUNT_CHANGES.get(key)
        if changes is None:
            changes = _COUNT_CHANGES[key] = tuple(
                projection.step_count_changes(old_status, new_status).items())
        if changes:
            run = self._runs[run_id]
            self._runs[run_id] = _replace(run, **{
                counter: getattr(run, counter) + by for counter, by in changes})

    # -- input from outside ----------------------------------------------------------
    def _push_inbox(self, run_id: str, kind: str, token: str | None,
                    payload: Raw | None) -> None:
        msg = InboxRecord(next(self._inbox_ids), run_id, kind, token, payload, self.now())
        self._inbox.setdefault(run_id, []).append(msg)
        job = self._jobs.get(run_id)
        if job is not None:
            if kind == "cancel":
                job.cancel_pending = True
                job.backoff = False
            if job.lease_owner is None and not job.backoff:
                job.available_at = self.now()
        self._signal_inbox(run_id)

    async def request_cancel(self, run_id: str) -> bool:
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFoundError(f"run not found: {run_id}")
        if run.status.is_terminal:
            return False
        self._push_inbox(run_id, "cancel", None, None)
        return True

    async def resume_hook(self, token: str, payload: Raw) -> str:
        hook = self._hooks.get(token)
        if hook is None or hook.status != "active":
            raise HookNotFoundError(f"hook not found: {token!r} (unknown or disposed)")
        if self._runs[hook.run_id].status.is_terminal:
            raise RunFinishedError(f"run {hook.run_id} has finished; hook {token!r} "
                                   f"takes no more payloads")
        self._push_inbox(hook.run_id, "hook", token, payload)
        return hook.run_id

    async def send_message(self, run_id: str, topic: str, payload: Raw) -> None:
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFoundError(f"run not found: {run_id}")
        if run.status.is_terminal:
            raise RunFinishedError(f"run {run_id} is {run.status.value}; it takes no "
                                   f"more messages")
        self._push_inbox(run_id, "message", topic, payload)

    async def child_ended(self, parent_run_id: str, child_run_id: str) -> None:
        parent = self._runs.get(parent_run_id)
        if parent is not None and not parent.status.is_terminal:
            self._push_inbox(parent_run_id, "child_ended", child_run_id, None)

    async def read_inbox(self, run_id: str) -> list[InboxRecord]:
        return list(self._inbox.get(run_id, ()))

    async def get_hook(self, token: str) -> HookRecord | None:
        return self._hooks.get(token)

    async def list_hooks(self, run_id: str | None = None) -> list[HookRecord]:
        return [h for h in self._hooks.values() if run_id is None or h.run_id == run_id]

    # -- streams -------------------------------------------------------------------
    async def write_stream(self, run_id: str, name: str, chunks: Sequence[tuple[int, Raw]],
                           *, close: bool = False) -> None:
        if run_id not in self._runs:
            raise RunNotFoundError(f"run not found: {run_id}")
        stored = self._streams.setdefault((run_id, name), [])
        now = self.now()
        for index, data in chunks:
            if index == len(stored):
                stored.append(StreamChunk(run_id, name, index, data, now))
            elif index > len(stored):
                raise ValueError(f"stream {name!r}: chunk {index} written before "
                                 f"chunk {len(stored)}")
        if close:
            self._closed_streams.add((run_id, name))
        self._signal_stream(run_id, name)

    def _signal_stream(self, run_id: str, name: str) -> None:
        self.notify_stream(run_id, name)

    async def read_stream(self, run_id: str, name: str, start: int = 0,
                          limit: int = 1000) -> tuple[list[StreamChunk], bool]:
        stored = self._streams.get((run_id, name), [])
        return stored[start:start + limit], (run_id, name) in self._closed_streams

    async def list_streams(self, run_id: str) -> list[tuple[str, int, bool]]:
        return [(name, len(chunks), (rid, name) in self._closed_streams)
                for (rid, name), chunks in sorted(self._streams.items()) if rid == run_id]


    # -- schedules -------------------------------------------------------------------
    async def put_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord:
        existing = self._schedules.get(schedule.schedule_id)
        if existing is not None:
            schedule = _replace(schedule, paused=existing.paused,
                                last_tick=existing.last_tick, created_at=existing.created_at)
        self._schedules[schedule.schedule_id] = schedule
        return schedule

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        return self._schedules.get(schedule_id)

    async def list_schedules(self) -> list[ScheduleRecord]:
        return [self._schedules[key] for key in sorted(self._schedules)]

    async def set_schedule_paused(self, schedule_id: str, paused: bool
                                  ) -> ScheduleRecord | None:
        existing = self._schedules.get(schedule_id)
        if existing is None:
            return None
        now = self.now()
        last_tick = existing.last_tick
        if existing.paused and not paused:
            last_tick = max(last_tick, now)
        updated: ScheduleRecord = _replace(existing, paused=paused, last_tick=last_tick,
                                           updated_at=now)
        self._schedules[schedule_id] = updated
        return updated

    async def delete_schedule(self, schedule_id: str) -> bool:
        return self._schedules.pop(schedule_id, None) is not None

    async def advance_schedule(self, schedule_id: str, expected_last_tick: dt.datetime,
                               new_last_tick: dt.datetime) -> bool:
        existing = self._schedules.get(schedule_id)
        if existing is None or existing.last_tick != expected_last_tick:
            return False
        self._schedules[schedule_id] = _replace(existing, last_tick=new_last_tick)
        return True


#: step_count_changes by (old status, new status), as (counter, change) pairs
_COUNT_CHANGES: dict[tuple[str | None, str], tuple[tuple[str, int], ...]] = {}

_replace = msgspec.structs.replace
