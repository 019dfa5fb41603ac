"""The live run: the mailbox's messages recorded as events and delivered, and the
workflow's new calls recorded and started.

A batch of messages becomes one append; a completion is durable before the workflow
acts on it (a run that ends on it commits its end in the same append). In the usual
case (one step awaited) `_start_new_calls` takes a shorter path: this is the hot path
of every step (`_process` -> `_start_new_calls` -> `_spawn_step` -> `_run_step`)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from worldflow.core.actor_children import ChildRuns, after_end
from worldflow.core.actor_end import RunEnding
from worldflow.core.actor_steps import StepAttempts
from worldflow.core.continuation import continuation_of
from worldflow.core.eager import send_then
from worldflow.core.events import (
    NO_METADATA,
    CancelRequested,
    ChildStarted,
    ErrorInfo,
    EventRecord,
    HookCreated,
    HookReceived,
    HookRejected,
    MessageReceived,
    RunFailed,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
    ValuePublished,
    WaitCompleted,
    WaitCreated,
)
from worldflow.core.instance import ChildCall, HookCall, PublishCall, StepCall, TimerCall
from worldflow.core.mailbox import (
    ChildCheck,
    DeadlinePassed,
    InboxChanged,
    Message,
    Recorded,
    RetryDue,
    StepFinished,
    StepTaskFailed,
    TimerDue,
)
from worldflow.core.versioning import take_new_markers

if TYPE_CHECKING:
    import msgspec

    from worldflow.core.instance import WorkflowInstance

logger = logging.getLogger("worldflow.run")

#: runs of a workflow that must have ended at the same step call, one after another,
#: before its other step completions are appended before the workflow takes them
END_CALL_STREAK = 3


class LiveRun(StepAttempts, ChildRuns, RunEnding):
    """Record and deliver the mailbox's messages; record and start new calls."""

    async def _process(self, messages: list[Message]) -> bool:
        """Record and deliver a batch of messages; True if the run ended (timed out)."""
        instance = self._instance
        assert instance is not None
        # (a step's start left unsent goes first, with its outcome: see _start_new_calls)
        records: list[EventRecord] = self._take_unsent([])
        deliveries: list[EventRecord] = []
        inbox_ids: list[int] = []
        for message in messages:
            match message:
                case StepFinished(cid=cid) if cid in self._cancelled_steps:
                    pass  # stopped by a cancel, and recorded as failed then
                case RetryDue(cid=cid) if cid in self._cancelled_steps:
                    pass
                case StepFinished(cid=cid, outcome=outcome, at=at):
                    self._steps.pop(cid, None)
                    if isinstance(outcome, StepRetrying):
                        record, retry_at = self._record_retrying(outcome, at)
                        records.append(record)
                        self._schedule_retry(cid, outcome.attempt + 1, retry_at)
                    else:
                        record = self._record(outcome)
                        records.append(record)
                        deliveries.append(record)
                case TimerDue(cid=cid):
                    timer = instance.expect(cid, TimerCall)
                    self._timers.pop(cid, None)
                    if not timer.fired and not timer.handle._cancelled:
                        record = self._record(WaitCompleted(cid))
                        records.append(record)
                        deliveries.append(record)
                case RetryDue(cid=cid, attempt=attempt):
                    self._retries.pop(cid, None)
                    records.append(self._start_step(instance.expect(cid, StepCall), attempt))
                case Recorded(records=recorded):
                    records.extend(recorded)
                    deliveries.extend(r for r in recorded if isinstance(r.event, StepFailed))
                case InboxChanged():
                    for item in await self.world.read_inbox(self.run_id):
                        if item.id in inbox_ids:
                            continue
                        inbox_ids.append(item.id)
                        if item.kind == "cancel":
                            if not self._cancel_requested:  # a second cancel adds nothing
                                records.extend(self._request_cancel(deliveries))
                        elif (item.kind == "hook" and item.token in self._hooks_open
                              and item.payload is not None):
                            record = self._take_hook_payload(
                                self._hooks_open[item.token], item.token, item.payload)
                            records.append(record)
                            if isinstance(record.event, HookReceived):
                                deliveries.append(record)
                        elif item.kind == "message" and item.payload is not None:
                            record = self._record(MessageReceived(
                                item.token or "default", item.payload))
                            records.append(record)
                            deliveries.append(record)
                            self._message_came(item.token or "default")
                        elif item.kind == "child_ended" and item.token is not None:
                            ended = await self._check_child(item.token)
                            if ended is not None:
                                records.append(ended)
                                deliveries.append(ended)
                case ChildCheck(child_run_id=child_id):
                    ended = await self._check_child(child_id)
                    if ended is not None:
                        records.append(ended)
                        deliveries.append(ended)
                case StepTaskFailed(cid=cid, error=error):
                    self._steps.pop(cid, None)
                    raise RuntimeError(f"step {instance.expect(cid, StepCall).step.name!r}: "
                                       f"its attempt could not run: {error}") from error
                case DeadlinePassed():
                    if self._deadline is not None:
                        assert self._meta is not None
                        timeout = (self._deadline - self._meta.started_at).total_seconds()
                        await self._end(RunFailed(ErrorInfo(
                            "WorkflowTimeoutError", f"workflow {instance.defn.name!r} timed "
                            f"out after {timeout:g}s")), records, inbox_ids)
                        logger.info("run %s: timed out", self.run_id)
                        return True
        # The workflow takes what is delivered before it is committed, but acts on it
        # only after: its new calls are recorded and started once the append below has
        # committed, and if it ended, its end is committed with these records in one
        # append, so that no run ever ends on a completion the log does not hold.
        def deliver() -> None:
            for record in deliveries:
                instance.deliver(record)

        completed = _completion_of_one_step(deliveries)
        if completed is not None and self._goes_on_after(completed):
            # (a step's completion the workflow is not expected to end on: the append is
            # sent first, and the workflow takes the result while the commit is on its
            # way; should it end after all, its end is an append of its own)
            await send_then(self.world.append_events(self.run_id, records,
                                                     inbox_ids=inbox_ids), deliver)
            if instance.done:
                self._ended_on(completed)
        else:
            deliver()
            if deliveries and self._ends_with(instance):
                if completed is not None:
                    self._ended_on(completed)
                await self._finish(records, inbox_ids)
                return True
            if records or inbox_ids:
                await self.world.append_events(self.run_id, records, inbox_ids=inbox_ids)
        if self._attempts_stopped:
            # attempts stopped by a cancel take their CancelledError (one turn) before
            # the calls the workflow made on it (compensations) start, eagerly
            self._attempts_stopped = False
            await asyncio.sleep(0)
        await self._start_new_calls()
        return False

    def _goes_on_after(self, completed: StepCompleted) -> bool:
        """Runs of this workflow have ended at the same step call, another than the one
        `completed` completes, the last few times (`Engine.end_calls`): the workflow is
        expected to go on after it."""
        instance = self._instance
        assert instance is not None
        seen = self.engine.end_calls.get(instance.defn.name)
        return (seen is not None and seen[1] >= END_CALL_STREAK
                and seen[0] != completed.correlation_id)

    def _ended_on(self, completed: StepCompleted) -> None:
        """The workflow ended on `completed`: note at which call (the same call again
        lengthens the streak, another starts a new one)."""
        instance = self._instance
        assert instance is not None
        cid = completed.correlation_id
        calls = self.engine.end_calls
        seen = calls.get(instance.defn.name)
        calls[instance.defn.name] = (cid, seen[1] + 1 if seen and seen[0] == cid else 1)

    def _finished_at_once(self, cid: str) -> bool:
        """The attempt of step `cid` just started eagerly finished without suspending:
        its outcome is the mailbox's last message."""
        mailbox = self._mailbox
        if not mailbox:
            return False
        last = mailbox[-1]
        return type(last) is StepFinished and last.cid == cid

    @staticmethod
    def _ends_with(instance: WorkflowInstance) -> bool:
        """The workflow ended and left nothing else to record: its end can share the
        append of what it ended on. Not a continue-as-new, which creates the next run
        before the end is recorded (that must follow a committed log)."""
        return (instance.done and not instance.new_calls and not instance.new_patch_markers
                and instance.root is not None and continuation_of(instance.root) is None)

    def _take_hook_payload(self, cid: str, token: str, payload: msgspec.Raw) -> EventRecord:
        """A payload from the inbox as `hook_received`, or as `hook_rejected` if it does
        not validate as the typed hook's type (sent by `resume_hook` without the type,
        or from another process): it never fails the run, which goes on waiting."""
        instance = self._instance
        assert instance is not None
        call = instance.calls.get(cid)
        reason = call.hook.rejects(payload) if isinstance(call, HookCall) else None
        if reason is None:
            return self._record(HookReceived(cid, token, payload))
        logger.warning("run %s: hook %s: a payload was rejected: %s", self.run_id, token,
                       reason)
        return self._record(HookRejected(cid, token, payload, reason))

    def _request_cancel(self, deliveries: list[EventRecord]) -> list[EventRecord]:
        """Take a cancel into the log: `cancel_requested` (delivered: the workflow gets
        `CancelledError`), then a failure for each running step attempt or waiting
        retry, which is stopped and not retried. Open children are cancelled too."""
        instance = self._instance
        assert instance is not None
        self._cancel_requested = True
        records = [self._record(CancelRequested())]
        stopped = list(self._steps) + [cid for cid in self._retries if cid not in self._steps]
        for cid in stopped:
            task = self._steps.pop(cid, None)
            if task is not None:
                self._attempts_stopped |= task.cancel()
            handle = self._timers.pop("retry" + cid, None)
            if handle is not None:
                handle.cancel()
            self._retries.pop(cid, None)
            self._cancelled_steps.add(cid)
            call = instance.expect(cid, StepCall)
            records.append(self._record(StepFailed(
                cid, call.step.name, self._attempts.get(cid, 1), ErrorInfo(
                    "CancelledError", f"step {call.step.name!r} was cancelled with its run",
                    fatal=True))))
        deliveries.extend(records)
        if self._children_open:
            children = list(self._children_open)
            self.engine.spawn(after_end(self.world, self.run_id, None, children),
                              name=f"cancel children of {self.run_id}")
        return records

    async def _start_new_calls(self) -> None:
        instance = self._instance
        assert instance is not None
        calls = instance.take_new_calls()
        only = calls[0] if len(calls) == 1 else None
        if type(only) is StepCall and not instance.new_patch_markers:
            # the usual case, one step awaited: as below, in fewer moves
            record = self._start_step(only, 1)
            if self._finished_at_once(only.cid):
                # its outcome is in the mailbox already (it did not suspend): its start
                # goes with the append of its outcome, which is processed next
                self._unsent.append(record)
                return
            await self.world.append_events(self.run_id, self._take_unsent([record]),
                                           wait=False)
            return
        # versioning markers first: a replay meets each before the calls that follow it
        records = self._take_unsent(
            [self._record(marker) for marker in take_new_markers(instance)])
        if not calls:
            if records:
                await self.world.append_events(self.run_id, records, wait=False)
            return
        durable = False  # hooks and waits must be committed before anyone relies on them
        to_start: list[tuple[StepCall, EventRecord]] = []
        children: list[ChildCall] = []
        published: list[PublishCall] = []
        for call in calls:
            if isinstance(call, StepCall):
                record = self._record(StepStarted(call.cid, call.step.name, 1, call.input))
                self._attempts[call.cid] = 1
                records.append(record)
                to_start.append((call, record))
            elif isinstance(call, TimerCall):
                if call.handle._cancelled:
                    continue
                records.append(self._record(WaitCreated(call.cid, call.resume_at)))
                self._schedule_timer(call)
                durable = True
            elif isinstance(call, HookCall):
                metadata = call.hook.metadata
                records.append(self._record(HookCreated(
                    call.cid, call.token, NO_METADATA if metadata is None else metadata)))
                self._hooks_open[call.token] = call.cid
                durable = True
            elif isinstance(call, ChildCall):
                records.append(self._record(ChildStarted(call.cid, call.child_run_id,
                                                         call.defn.name)))
                self._children_open[call.child_run_id] = call.cid
                children.append(call)
                durable = True
            elif isinstance(call, PublishCall):
                records.append(self._record(ValuePublished(call.cid, call.key, call.value)))
                published.append(call)
                durable = True
        await self.world.append_events(self.run_id, records, wait=durable)
        if published:
            await self._write_published(published)
        for call, record in to_start:
            self._spawn_step(call, 1, record.created_at)
        for child in children:  # after child_started is durable: a replay finds them
            await self._create_child(child)
        if children:
            self._schedule_child_recheck()

    async def _write_published(self, calls: list[PublishCall]) -> None:
        """Make published values readable by `get_event`: each key's values are the
        chunks of the run's stream `$event:{key}` (written after the log, idempotent by
        index), whose writes notify readers on every world."""
        from worldflow.core.published import event_stream

        by_key: dict[str, list[tuple[int, msgspec.Raw]]] = {}
        for call in calls:
            by_key.setdefault(call.key, []).append((call.index, call.value))
        for key, chunks in by_key.items():
            await self.world.write_stream(self.run_id, event_stream(key), chunks)

    # on the world's timers, not the event loop's: a test clock moves them (and time)
    def _schedule_timer(self, call: TimerCall) -> None:
        self._timers[call.cid] = self.world.timers.call_at(call.resume_at, self.post,
                                                           TimerDue(call.cid))

    def _message_came(self, topic: str) -> None:
        if self._noted_topics is not None and topic in self._noted_topics:
            self._noted_topics = None  # the noted wait is over: a next one is noted anew


def _completion_of_one_step(deliveries: list[EventRecord]) -> StepCompleted | None:
    """The step completion that `deliveries` is, if it is one alone."""
    if len(deliveries) == 1:
        event = deliveries[0].event
        if type(event) is StepCompleted:
            return event
    return None
