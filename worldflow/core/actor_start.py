"""Starting a run's actor: its queue slot, its log replayed through the workflow code,
and whatever the log shows as started but not finished carried on."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from worldflow.core import telemetry
from worldflow.core.actor_live import LiveRun
from worldflow.core.events import (
    CancelRequested,
    ChildEnded,
    ChildStarted,
    ErrorInfo,
    EventRecord,
    HookCreated,
    HookDisposed,
    HookReceived,
    MessageReceived,
    MessageWaiting,
    PatchMarker,
    RunCreated,
    RunFailed,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
    ValuePublished,
    WaitCompleted,
    WaitCreated,
)
from worldflow.core.instance import (
    ChildCall,
    HookCall,
    PublishCall,
    StepCall,
    TimerCall,
    WorkflowInstance,
)
from worldflow.core.mailbox import (
    ChildCheck,
    DeadlinePassed,
    InboxChanged,
    Recorded,
    RetryDue,
)
from worldflow.core.queues import get_queue, hold_slot
from worldflow.core.versioning import check_marker, read_log
from worldflow.errors import CorruptRecordError, NonDeterminismError

if TYPE_CHECKING:
    import datetime as dt

    from worldflow.core.records import RunRecord
    from worldflow.core.registry import WorkflowDef

logger = logging.getLogger("worldflow.run")


class RunStart(LiveRun):
    """Start the actor: take its queue slot, replay the log, resume what it left."""

    def _start_span(self, events: list[EventRecord], workflow_name: str) -> None:
        """Open this actor's segment of the run's span, under the stored context."""
        created = events[0].event if events else None
        if isinstance(created, RunCreated):
            self._trace_context = created.trace_context
        self._span = telemetry.start_run_span(self._trace_context, self.run_id,
                                              workflow_name, replayed_events=len(events))

    async def _fail_corrupt(self, exc: CorruptRecordError) -> None:
        """A stored event cannot be decoded: the run cannot be replayed, so it fails
        (with the reason), and other runs go on."""
        logger.error("%s", exc)
        after = exc.seq
        while True:  # the last seq, past any other undecodable events
            try:
                rest = await self.world.list_events(self.run_id, after_seq=after)
            except CorruptRecordError as later:
                after = later.seq
                continue
            self._seq = (rest[-1].seq if rest else after) + 1
            break
        await self.world.append_events(self.run_id, [self._record(
            RunFailed(ErrorInfo("CorruptRecordError", str(exc))))])

    async def _take_queue_slot(self, queue_name: str) -> bool:
        """A run started on a queue executes only while it holds one of its slots; while
        it waits for one it is parked and does not count against this process's limit."""
        try:
            queue = get_queue(queue_name)
        except ValueError:
            logger.warning("run %s: queue %r is not defined in this process; running it "
                           "without the queue's limits", self.run_id, queue_name)
            return True
        holder = f"{self.engine.worker_id}/{self.run_id}"
        self.engine.parked += 1
        self.world.notify_work()  # parking freed a place: claim more work
        try:
            await hold_slot(self.world, queue, holder,
                            lease_seconds=self.world.lease_seconds).__aenter__()
        finally:
            self.engine.parked -= 1
        self._queue_slot = (queue.name, holder)
        return True

    def _replay(self, events: list[EventRecord]) -> None:
        """Feed the log to the workflow in order, checking each recorded call."""
        instance = self._instance
        assert instance is not None
        for record in events:
            match record.event:
                case StepStarted(correlation_id=cid, step_name=name, attempt=attempt):
                    instance.expect(cid, StepCall, name)
                    self._recorded.add(cid)
                    self._attempts[cid] = attempt
                    self._retries.pop(cid, None)
                case StepRetrying(correlation_id=cid, step_name=name, attempt=attempt,
                                  retry_at=retry_at):
                    instance.expect(cid, StepCall, name)
                    self._attempts[cid] = attempt
                    self._retries[cid] = (attempt + 1, retry_at)
                case WaitCreated(correlation_id=cid, resume_at=resume_at):
                    instance.expect(cid, TimerCall).resume_at = resume_at
                    self._recorded.add(cid)
                case HookCreated(correlation_id=cid, token=token):
                    instance.expect(cid, HookCall)
                    self._recorded.add(cid)
                    self._hooks_open[token] = cid
                case HookDisposed(token=token):
                    self._hooks_open.pop(token, None)
                case MessageReceived(topic=topic):
                    self._message_came(topic)
                    instance.deliver(record)
                case MessageWaiting(topics=topics):
                    self._noted_topics = tuple(topics)
                case ChildStarted(correlation_id=cid, child_run_id=child_id,
                                  workflow_name=name):
                    child = instance.expect(cid, ChildCall)
                    if child.defn.name != name:
                        raise NonDeterminismError(
                            f"workflow {instance.defn.name!r} (run {self.run_id}): at "
                            f"position {cid} the code started a child of workflow "
                            f"{child.defn.name!r} but the log records one of {name!r}; the "
                            f"code changed under a running run",
                            workflow=instance.defn.name, run_id=self.run_id, position=cid,
                            expected=f"a child run of {name!r}",
                            found=f"a child run of {child.defn.name!r}")
                    child.child_run_id = child_id
                    self._recorded.add(cid)
                    self._children_open[child_id] = cid
                case ChildEnded(correlation_id=cid):
                    for child_id in [k for k, v in self._children_open.items() if v == cid]:
                        del self._children_open[child_id]  # (or an earlier run of its chain)
                    instance.deliver(record)
                case CancelRequested():
                    self._cancel_requested = True
                    instance.deliver(record)
                case ValuePublished(correlation_id=cid):
                    instance.expect(cid, PublishCall)
                    self._recorded.add(cid)
                case PatchMarker():
                    check_marker(instance, record.event)
                case (StepCompleted(correlation_id=cid) | StepFailed(correlation_id=cid)
                      | WaitCompleted(correlation_id=cid) | HookReceived(correlation_id=cid)):
                    self._retries.pop(cid, None)
                    instance.deliver(record)

    async def _resume_after_replay(self) -> None:
        """Carry on with whatever the log shows as started but not finished."""
        instance = self._instance
        assert instance is not None
        new_calls = [c for c in instance.take_new_calls() if c.cid not in self._recorded]
        if self._fresh is None:
            self.post(InboxChanged())  # input that arrived while no actor held the run
        failed: list[EventRecord] = []
        for call in instance.calls.values():
            if call.cid not in self._recorded:
                continue
            if isinstance(call, StepCall) and not call.future.done():
                if call.cid in self._retries:
                    attempt, at = self._retries[call.cid]
                    self._schedule_retry(call.cid, attempt, at)
                    continue
                # the process running this attempt died: it counts as a failed attempt
                attempt = self._attempts.get(call.cid, 0) + 1
                if attempt > call.step.max_retries + 1:
                    failed.append(self._record(StepFailed(
                        call.cid, call.step.name, attempt - 1, ErrorInfo(
                            "WorkerDied", f"the worker running attempt {attempt - 1} of "
                            f"step {call.step.name!r} stopped before it finished"))))
                else:
                    self.post(RetryDue(call.cid, attempt))
            elif isinstance(call, TimerCall) and not call.fired and not call.handle._cancelled:
                self._schedule_timer(call)
        if failed:
            self.post(Recorded(failed))
        for child_id in self._children_open:  # created? ended while nobody listened?
            self.post(ChildCheck(child_id))
        if self._children_open:
            self._schedule_child_recheck()
        # published values whose stream write a crash may have lost (rewrites are no-ops)
        published = [c for c in instance.calls.values()
                     if isinstance(c, PublishCall) and c.cid in self._recorded]
        if published:
            await self._write_published(published)
        instance.new_calls = new_calls
        if self._deadline is not None:
            delay = (self._deadline - self.world.now()).total_seconds()
            if delay <= 0:  # past its deadline: start nothing new, end it first thing
                self.post(DeadlinePassed())
                return
            self._timers["deadline"] = self.world.timers.call_at(
                self._deadline, self.post, DeadlinePassed())
        await self._start_new_calls()


def new_instance(defn: WorkflowDef, run: RunRecord, events: list[EventRecord],
                 started_at: dt.datetime, args: list[Any], kwargs: dict[str, Any]
                 ) -> WorkflowInstance:
    """The run's workflow instance, told what its log holds, not started yet: made
    alike by the actor and by the deploy check (worldflow.core.check)."""
    instance = WorkflowInstance(defn, run.run_id, args, kwargs, started_at)
    instance.parent_run_id = run.parent_run_id
    instance.recorded_tokens = {e.event.correlation_id: e.event.token for e in events
                                if isinstance(e.event, HookCreated)}
    read_log(instance, events)
    return instance
