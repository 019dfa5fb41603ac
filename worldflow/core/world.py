"""The `World` protocol: everything the engine needs from storage, and nothing else.

A world stores runs, their event logs (with the runs/steps/hooks projections), an inbox
of outside input per run, hook tokens and stream chunks, and a queue of runs to work on
with leases. Three worlds implement it (`memory`, `sqlite`, `postgres`) and one
contract suite (`tests/contract/`) holds each of them to the guarantees below.

`BaseWorld` (core/base_world.py, exported here) carries what every world shares:
`async with world:` / `start()` / `close()`, the engine that processes the queue, and
in-process wake-ups. The world's time is `Timers` (core/clock.py, exported here).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from worldflow.core.base_world import BaseWorld
from worldflow.core.clock import Clock, SystemTimers, TimerHandle, Timers

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Collection, Mapping, Sequence
    from types import TracebackType

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

__all__ = ["BaseWorld", "Clock", "SystemTimers", "TimerHandle", "Timers", "World"]

logger = logging.getLogger("worldflow.world")

@runtime_checkable
class World(Protocol):
    """Storage, queue and wake-ups for worldflow. All times are aware UTC datetimes."""

    name: str
    #: steps and runs this process works on at once (the engine's limit)
    queue_concurrency: int
    #: how long a claimed run stays leased without a renewal
    lease_seconds: float
    #: a run whose next wake-up is further away than this many seconds is evicted
    keep_alive: float

    # -- lifecycle ---------------------------------------------------------------
    async def open(self) -> None:
        """Connect and create or check the schema. Idempotent. Does not process runs."""

    async def start(self) -> None:
        """`open()`, then begin processing the queue in this process."""

    async def close(self) -> None:
        """Stop processing, flush pending writes, release leases, disconnect."""

    async def __aenter__(self) -> World:
        """`start()`; `async with world:` closes it on exit."""

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None: ...

    #: the world's time and timers (`clock=` of a world: a clock function, or `Timers`)
    timers: Timers

    def now(self) -> dt.datetime:
        """The world's clock (injectable for tests)."""

    # -- runs and the event log ----------------------------------------------------
    async def create_run(self, run: NewRun, *, lease_owner: str | None,
                         lease_seconds: float) -> tuple[RunRecord, bool]:
        """Create a run, its `run_created` event (seq 0) and its queue job, atomically;
        with `run.started`, the run is created running (`started_at` = `created_at`)
        and its log holds `run_started` (seq 1, at `created_at`) too
        (`records.created_run` is the record to return, `records.created_events` the
        log to store).

        Idempotent by `run.run_id`: if the run exists, return `(existing, False)` and
        change nothing. With `lease_owner` the job is created already leased to that
        owner (the caller will run it at once); otherwise it is available now.
        If `run.dedup_key` is set and a live run holds the same key, return
        `(that_run, False)`.
        """

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_runs(self, *, status: str | None = None, workflow_name: str | None = None,
                        limit: int = 50, cursor: str | None = None,
                        tags: Mapping[str, str] | None = None,
                        since: dt.datetime | None = None) -> Page:
        """Runs newest first (by created_at, then run_id); cursor pagination (keyset on
        (created_at, run_id), so a page costs the same however deep it is).

        `tags`: only runs having every given key=value pair; `since`: only runs created
        at or after it. A malformed cursor raises `ValueError`."""

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        """The run's steps, in the order they were first started."""

    async def list_events(self, run_id: str, *, after_seq: int = -1,
                          limit: int | None = None) -> list[EventRecord]:
        """The run's log in `seq` order, from `after_seq + 1`."""

    async def append_events(self, run_id: str, records: Sequence[EventRecord], *,
                            inbox_ids: Sequence[int] = (), wait: bool = True) -> None:
        """Append events to one run's log with their projections, atomically.

        Also deletes the inbox messages `inbox_ids` (taken into the log by these events).
        A terminal event (run_completed/failed/cancelled) also removes the run's queue
        job and inbox, and disposes its active hooks.

        Ordered: appends of one run commit in call order. Group-committed: many runs'
        appends share a transaction; with `wait=True` this returns after the commit,
        with `wait=False` once queued (a later awaited append commits after it).
        Fenced: unless the records continue the log exactly (first seq = last stored
        seq + 1, no gaps), nothing of this call is written and it raises
        `LeaseLostError` (another worker owns the run, or an earlier append was lost);
        other callers' writes in the same batch are unaffected. A `hook_created` event
        stores its `metadata` on the hook (returned by `get_hook`/`list_hooks`).
        """

    # -- queue -----------------------------------------------------------------------
    async def claim_runs(self, owner: str, limit: int, lease_seconds: float, *,
                         workflows: Collection[str] | None = None) -> list[str]:
        """Lease up to `limit` runs whose job is available (`available_at <= now`) or
        whose lease expired; oldest available first. Two owners never hold one run.

        With `workflows`, only runs of those workflow names are claimed (a worker takes
        only runs it has the code of), except that a run with a pending cancel in its
        inbox is claimable by anyone (ending it needs no workflow code) until a worker
        releases it with `backoff` (one that could not end it: from then on only workers
        with its code take it, until another cancel is requested). None: any run.
        The filter is served by an index: workers lacking a workflow never scan past its
        runs."""

    async def renew_leases(self, owner: str, lease_seconds: float) -> set[str]:
        """Extend every lease `owner` holds; return the run ids it still holds."""

    async def release_run(self, run_id: str, owner: str, wake_at: dt.datetime | None, *,
                          backoff: bool = False) -> None:
        """Give the run back to the queue, to be claimed at `wake_at` (None: only when
        outside input arrives). No-op if `owner` does not hold it.

        Without `backoff` (an eviction), a non-empty inbox makes it available at once, so
        input that arrived while the run was leased is never missed. With `backoff` (the
        run could not be worked on: a crash, a workflow not registered here), it waits
        for `wake_at` even if hook payloads are waiting or arrive; only a cancel (pending
        now, or requested later with `request_cancel`) makes it available at once."""

    async def expire_leases(self, owners: Sequence[str]) -> int:
        """Make runs leased by `owners` (known dead) available at once; return how many."""

    async def lease_owners(self) -> list[str]:
        """Owners holding at least one lease."""

    async def next_wake_at(self, *, workflows: Collection[str] | None = None
                           ) -> dt.datetime | None:
        """When the earliest delayed job (or lease) becomes claimable (None: none);
        `workflows` restricts it to jobs `claim_runs(workflows=...)` would take."""

    async def wait_for_work(self, timeout: float) -> None:
        """Return when work may be available (a wake-up) or after `timeout` seconds."""

    # -- input from outside a run -------------------------------------------------
    async def request_cancel(self, run_id: str) -> bool:
        """Queue a cancel for the run and make its job available at once (even in a
        backoff); False if it has already ended. `RunNotFoundError` if there is no such
        run."""

    async def resume_hook(self, token: str, payload: Raw) -> str:
        """Queue `payload` for the live hook `token`; return its run id.
        `HookNotFoundError` for an unknown or disposed token."""

    async def send_message(self, run_id: str, topic: str, payload: Raw) -> None:
        """Queue a message of `topic` for the run (an inbox message of kind "message",
        its `token` the topic) and make its job available at once unless it is in a
        backoff. `RunNotFoundError` if there is no such run, `RunFinishedError` if it
        has ended; atomic with that check."""

    async def child_ended(self, parent_run_id: str, child_run_id: str) -> None:
        """Tell the parent run that its child has ended: an inbox message of kind
        "child_ended" (its `token` the child's id) that wakes the parent like any input.
        No-op if the parent is unknown or has ended."""

    async def read_inbox(self, run_id: str) -> list[InboxRecord]:
        """The run's pending inbox messages, oldest first."""

    async def get_hook(self, token: str) -> HookRecord | None: ...

    async def list_hooks(self, run_id: str | None = None) -> list[HookRecord]: ...

    # -- streams -------------------------------------------------------------------
    async def write_stream(self, run_id: str, name: str, chunks: Sequence[tuple[int, Raw]],
                           *, close: bool = False) -> None:
        """Store chunks at their indexes; an index already stored is kept as it was
        (so a retried writer never duplicates what a reader saw). `close` marks the
        stream complete."""

    async def read_stream(self, run_id: str, name: str, start: int = 0,
                          limit: int = 1000) -> tuple[list[StreamChunk], bool]:
        """Chunks from index `start`, and whether the stream is closed."""

    async def list_streams(self, run_id: str) -> list[tuple[str, int, bool]]:
        """(name, chunk count, closed) of each stream of the run."""

    # -- queue slots (named queues' limits, across processes) --------------------------
    async def acquire_slot(self, queue: str, holder: str, *, concurrency: int | None,
                           rate_limit: tuple[int, float] | None, priority: int,
                           lease_seconds: float) -> float | None:
        """Take one slot of `queue` for `holder`, atomically, if the limits allow it now:
        fewer than `concurrency` live slots, fewer than `rate_limit[0]` grants in the last
        `rate_limit[1]` seconds, and no live waiter ahead of `holder` (higher priority, or
        equal priority and waiting longer). Returns None when granted (also when `holder`
        already holds one); otherwise records `holder` as waiting (until `lease_seconds`
        pass without it asking again) and returns the seconds worth waiting before asking
        again. A slot expires `lease_seconds` after it was granted or renewed."""

    async def release_slot(self, queue: str, holder: str) -> None:
        """Give the slot (or the waiting place) of `holder` back; wakes waiters."""

    async def renew_slots(self, holder_prefix: str, lease_seconds: float) -> None:
        """Extend the slots of every holder whose name starts with `holder_prefix`."""

    async def wait_slot(self, queue: str, timeout: float) -> None:
        """Return when a slot of `queue` may have been released, or after `timeout`."""

    # -- notifications (in-process wake-ups; `BaseWorld` implements them) ----------
    async def wait_run_finished(self, run_id: str, timeout: float | None = None) -> RunRecord:
        """Wait until the run has ended and return it (`RunNotFoundError` if none),
        also when another process ran it."""

    def notify_work(self) -> None:
        """Wake this process's claim loop (`wait_for_work` returns)."""

    def set_inbox_listener(self, listener: Callable[[str], None] | None) -> None:
        """`listener(run_id)` is called when outside input (a hook payload, a cancel)
        arrives for a run, from this process or, where the world can tell, another."""

    def notify_stream(self, run_id: str, name: str) -> None:
        """Wake readers following stream `name` of `run_id` (new chunks or closed)."""

    async def wait_stream(self, run_id: str, name: str, timeout: float) -> None:
        """Return when the stream may have changed, or after `timeout` seconds."""

    # -- schedules (cron; the engine's scheduler starts their runs) -----------------
    async def put_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord:
        """Create the schedule, or update the definition of the one with its id
        (`workflow_name`, `cron`, `timezone`, `catchup`, `input`, `updated_at`) while
        keeping its `paused`, `last_tick` and `created_at`; return what is stored."""

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None: ...

    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by id."""

    async def set_schedule_paused(self, schedule_id: str, paused: bool
                                  ) -> ScheduleRecord | None:
        """Pause or resume; None if there is no such schedule. Resuming a paused
        schedule moves its `last_tick` to at least `now()`: ticks that passed while it
        was paused are not caught up."""

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete it (runs it started stay); False if there was none."""

    async def advance_schedule(self, schedule_id: str, expected_last_tick: dt.datetime,
                               new_last_tick: dt.datetime) -> bool:
        """Compare-and-set: set `last_tick` to `new_last_tick` only if it is still
        `expected_last_tick`; True if it was set. Atomic across processes."""


