"""The end of a run: its terminal event (completed, failed, cancelled, or continued as
a new run), committed with the disposal of its open hooks; then its children and its
parent are told. A run can also be ended cancelled without its workflow code."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from worldflow.core.actor_children import after_end
from worldflow.core.actor_state import ActorState
from worldflow.core.continuation import ContinueAsNew, continuation_of, next_run_id
from worldflow.core.events import (
    TERMINAL_EVENTS,
    ChildEnded,
    ChildStarted,
    ErrorInfo,
    EventRecord,
    HookCreated,
    HookDisposed,
    RunCancelled,
    RunCompleted,
    RunContinued,
    RunFailed,
    run_outcome,
)
from worldflow.core.records import NewRun, RunStatus
from worldflow.core.serde import encode_value
from worldflow.core.steps import base_exception_info, error_info
from worldflow.errors import CorruptRecordError

if TYPE_CHECKING:
    from worldflow.core.context import WorkflowMetadata
    from worldflow.core.events import Event
    from worldflow.core.records import RunRecord
    from worldflow.core.world import World

logger = logging.getLogger("worldflow.run")


class RunEnding(ActorState):
    """End the run: its terminal event, then its children and parent told."""

    async def _finish(self, records: list[EventRecord] | None = None,
                      inbox_ids: list[int] | None = None) -> None:
        """Record the run's end; `records` (and `inbox_ids`): what it ended on, not yet
        appended, which is committed with it."""
        instance = self._instance
        assert instance is not None and instance.root is not None
        root = instance.root
        event: Event
        signal = continuation_of(root)
        if signal is not None:
            assert not records and not inbox_ids, "continue-as-new follows a committed log"
            await self._continue_as_new(signal)
            return
        if root.cancelled() and self._cancel_requested:
            event = RunCancelled()  # the cancel's CancelledError left the workflow
        elif root.cancelled():
            event = RunFailed(ErrorInfo("CancelledError", "the workflow task was cancelled"))
        elif (error := root.exception()) is not None:
            event = RunFailed(error_info(error) if isinstance(error, Exception) else
                              base_exception_info(error, f"workflow {instance.defn.name!r}"))
        else:
            try:
                event = RunCompleted(encode_value(root.result(),
                                                  what=f"workflow {instance.defn.name!r} result"))
            except TypeError as exc:
                event = RunFailed(error_info(exc))
        await self._end(event, records or [], inbox_ids or [])
        if isinstance(event, RunFailed):
            logger.info("run %s: failed: %s: %s", self.run_id, event.error.type,
                        event.error.message)
        elif isinstance(event, RunCancelled):
            logger.info("run %s: cancelled", self.run_id)
        else:
            logger.info("run %s: completed", self.run_id)

    async def _continue_as_new(self, signal: ContinueAsNew) -> None:
        """Create the chain's next run (idempotent by its derived id), then end this one
        `continued`: a crash between the two redoes both on replay."""
        instance = self._instance
        assert instance is not None
        world, engine = self.world, self.engine
        this = await world.get_run(self.run_id)
        next_id = next_run_id(self.run_id)
        local = engine.has_capacity
        record, created = await world.create_run(
            NewRun(next_id, instance.defn.name, signal.input, world.now(),
                   queue=this.queue if this is not None else "default",
                   parent_run_id=self._parent_run_id, trace_context=self._trace_context,
                   tags=this.tags if this is not None else {}),
            lease_owner=engine.worker_id if local else None,
            lease_seconds=world.lease_seconds)
        await self._end(RunContinued(next_id), [], [])
        logger.info("run %s: continued as %s", self.run_id, next_id)
        if created and local:
            engine.dispatch(next_id, fresh=record, trace_context=self._trace_context)

    async def _end(self, event: Event, records: list[EventRecord], inbox_ids: list[int]) -> None:
        records = self._take_unsent(records)
        for task in self._steps.values():
            task.cancel()
        for token, cid in list(self._hooks_open.items()):
            records.append(self._record(HookDisposed(cid, token)))
        self._hooks_open.clear()
        end = self._record(event)
        records.append(end)
        self.releasing = True  # the terminal event removes the run's lease with its job
        await self.world.append_events(self.run_id, records, inbox_ids=inbox_ids)
        if self._span is not None:
            self._span_ended(event)
        # committed: whoever waits for the run in this process needs no read-back
        if self._record_at_start is not None and not self.ended.done():
            self.ended.set_result(_final_record(self._record_at_start, end, self._meta))
        await after_end(self.world, self.run_id, self._parent_run_id,
                        list(self._children_open) if isinstance(event, RunCancelled) else [])

    def _span_ended(self, event: Event) -> None:
        """The terminal `event` is committed: the segment's outcome."""
        match event:
            case RunCompleted():
                self._span_outcome = "completed"
            case RunFailed(error=error):
                self._span_outcome, self._span_error = "failed", error
            case RunCancelled():
                self._span_outcome = "cancelled"
            case RunContinued():
                self._span_outcome = "continued"


def _final_record(run: RunRecord, end: EventRecord, meta: WorkflowMetadata | None
                  ) -> RunRecord:
    """The run's record as the terminal event `end` leaves it (the projection's
    run_finished, applied to the record the actor started from)."""
    outcome = run_outcome(end.event)
    assert outcome is not None, f"not a terminal event: {end.event!r}"
    status, output, error = outcome
    started_at = run.started_at or (meta.started_at if meta is not None else None)
    return msgspec.structs.replace(run, status=RunStatus(status), output=output, error=error,
                                   started_at=started_at, completed_at=end.created_at,
                                   updated_at=end.created_at)


async def cancel_without_code(world: World, run_id: str) -> bool:
    """End the run `cancelled` if a cancel waits in its inbox, without its workflow code
    (for a worker that lacks the code, or a run whose actor keeps crashing). Its open
    hooks are disposed as at any end. Returns True if the run ended (or had ended)."""
    inbox = await world.read_inbox(run_id)
    if not any(item.kind == "cancel" for item in inbox):
        return False
    try:
        events = await world.list_events(run_id)
    except CorruptRecordError:
        return False  # the actor fails such a run when it replays it
    if any(isinstance(e.event, TERMINAL_EVENTS) for e in events):
        return True
    open_hooks: dict[str, str] = {}
    children: dict[str, str] = {}
    for record in events:
        match record.event:
            case HookCreated(correlation_id=cid, token=token):
                open_hooks[token] = cid
            case HookDisposed(token=token):
                open_hooks.pop(token, None)
            case ChildStarted(correlation_id=cid, child_run_id=child_id):
                children[child_id] = cid
            case ChildEnded(child_run_id=child_id):
                children.pop(child_id, None)
    now = world.now()
    seq = events[-1].seq + 1 if events else 0
    new: list[Event] = [HookDisposed(cid, token) for token, cid in open_hooks.items()]
    new.append(RunCancelled())
    await world.append_events(
        run_id, [EventRecord(run_id, seq + i, event, now) for i, event in enumerate(new)],
        inbox_ids=[item.id for item in inbox])
    logger.info("run %s: cancelled (without running its workflow code)", run_id)
    run = await world.get_run(run_id)
    await after_end(world, run_id, None if run is None else run.parent_run_id, list(children))
    return True
