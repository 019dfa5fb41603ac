"""One actor per live run: it owns the workflow's instance and a mailbox.

Step outcomes, timer firings, hook payloads and cancels reach the workflow only
through the mailbox. The actor records each as an event (awaiting the commit: a
completion is durable before the workflow acts on it), then delivers the events to
the workflow one by one, in log order, exactly as replay will. When the run only
waits (a sleep, a hook, a retry backoff) the actor gives the run back to the queue
and exits: a waiting run holds no memory, and is replayed when it wakes.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from worldflow.core import telemetry
from worldflow.core.context import WorkflowMetadata
from worldflow.core.continuation import ContinueAsNew, next_run_id
from worldflow.core.events import (
    NO_METADATA,
    TERMINAL_EVENTS,
    CancelRequested,
    ChildEnded,
    ChildStarted,
    ErrorInfo,
    EventRecord,
    HookCreated,
    HookDisposed,
    HookReceived,
    HookRejected,
    MessageReceived,
    MessageWaiting,
    PatchMarker,
    RunCancelled,
    RunCompleted,
    RunContinued,
    RunCreated,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
    ValuePublished,
    WaitCompleted,
    WaitCreated,
    run_outcome,
)
from worldflow.core.instance import (
    AWAITABLE_THINGS,
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
    Message,
    Recorded,
    RetryDue,
    StepFinished,
    TimerDue,
)
from worldflow.core.queues import get_queue, hold_slot
from worldflow.core.records import NewRun, RunStatus, step_id_for
from worldflow.core.registry import get_workflow
from worldflow.core.serde import encode_value
from worldflow.core.steps import base_exception_info, error_info
from worldflow.core.versioning import check_marker, read_log, take_new_markers
from worldflow.errors import CorruptRecordError, NonDeterminismError

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from worldflow.core.engine import Engine
    from worldflow.core.events import Event
    from worldflow.core.records import RunRecord
    from worldflow.core.registry import WorkflowDef
    from worldflow.core.steps import StepOutcome
    from worldflow.core.world import TimerHandle, World


__all__ = ["RunActor", "cancel_without_code", "new_instance"]

logger = logging.getLogger("worldflow.run")

#: a parent waiting for children wakes this often to look at them, in case the news of a
#: child's end was lost (its process stopped between its last event and telling us)
CHILD_RECHECK = dt.timedelta(minutes=5)


class RunActor:
    def __init__(self, engine: Engine, run_id: str, *,
                 fresh: RunRecord | None = None,
                 trace_context: dict[str, str] | None = None) -> None:
        self.engine = engine
        # created by this process just now: its log is run_created alone, its inbox empty
        self._fresh = fresh
        self.world: World = engine.world
        self.run_id = run_id
        self._mailbox: collections.deque[Message] = collections.deque()
        #: what the loop waits on while its mailbox is empty (set by `post`)
        self._wakeup: asyncio.Future[None] | None = None
        self._seq = 0
        self._instance: WorkflowInstance | None = None
        self._meta: WorkflowMetadata | None = None
        self._steps: dict[str, asyncio.Task[None]] = {}
        self._timers: dict[str, TimerHandle] = {}
        self._retries: dict[str, tuple[int, dt.datetime]] = {}  # cid -> (next attempt, at)
        self._attempts: dict[str, int] = {}
        self._recorded: set[str] = set()
        self._hooks_open: dict[str, str] = {}  # token -> cid
        self.task: asyncio.Task[None] | None = None
        #: the run is being given back or ended: its lease may be gone already
        self.releasing = False
        self._deadline: dt.datetime | None = None  # the workflow's timeout
        self._queue_slot: tuple[str, str] | None = None
        self._children_open: dict[str, str] = {}  # child run id -> cid
        #: the topics of the last message_waiting note since a message came (not noted
        #: again while they are the same)
        self._noted_topics: tuple[str, ...] | None = None
        #: a cancel reached the workflow (cancel_requested is in the log)
        self._cancel_requested = False
        #: steps whose attempt (or retry) the cancel stopped: their outcomes are ignored
        self._cancelled_steps: set[str] = set()
        self._parent_run_id: str | None = None
        self._record_at_start: RunRecord | None = None
        #: events recorded at start that go with the next append (see `_take_unsent`)
        self._unsent: list[EventRecord] = []
        #: the run's final record once this actor's terminal append has committed; None
        #: when the actor stops without ending the run (evicted, lease lost, crashed)
        self.ended: asyncio.Future[RunRecord | None] = (
            asyncio.get_running_loop().create_future())
        # telemetry (see core/telemetry.py): this actor's segment of the run's trace
        self._trace_context = trace_context or {}
        self._span: Span | None = None
        self._span_outcome = "stopped"
        self._span_error: BaseException | ErrorInfo | None = None

    @property
    def busy(self) -> bool:
        """A step attempt of the run is running, or input waits in its mailbox (a test
        clock moves time only when no actor is busy)."""
        return bool(self._steps or self._mailbox)

    # -- mailbox -------------------------------------------------------------------
    def post(self, message: Message) -> None:
        self._mailbox.append(message)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def inbox_changed(self) -> None:
        """The run's inbox got input (a hook payload, a cancel request)."""
        self.post(InboxChanged())

    def _record(self, event: Event) -> EventRecord:
        record = EventRecord(self.run_id, self._seq, event, self.world.now())
        self._seq += 1
        if self.engine.log_events:
            self.engine.log_event(record)
        return record

    # -- lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._run()
        except Exception as exc:
            self._span_error = exc
            raise
        finally:
            if self._span is not None:
                telemetry.end_run_span(self._span, self._span_outcome, self._span_error)
            if not self.ended.done():
                self.ended.set_result(None)
            if self._queue_slot is not None:
                await asyncio.shield(self.world.release_slot(*self._queue_slot))
            for task in self._steps.values():
                task.cancel()
            for handle in self._timers.values():
                handle.cancel()
            if self._steps:
                await asyncio.gather(*self._steps.values(), return_exceptions=True)
            if self._instance is not None and not self._instance.done:
                self._instance.discard()

    async def _run(self) -> None:
        world = self.world
        run = self._fresh or await world.get_run(self.run_id)
        if run is None or run.status.is_terminal:
            return
        self._record_at_start = run
        self._parent_run_id = run.parent_run_id
        defn = get_workflow(run.workflow_name)
        if defn is None:
            # claimed for a pending cancel (any worker may end a run it cannot run)
            if await cancel_without_code(world, self.run_id):
                return
            logger.error("run %s: workflow %r is not registered in this process; "
                         "retrying in 30s", self.run_id, run.workflow_name)
            await world.release_run(self.run_id, self.engine.worker_id,
                                    world.now() + dt.timedelta(seconds=30), backoff=True)
            return
        if run.queue != "default" and not await self._take_queue_slot(run.queue):
            return
        if self._fresh is not None:
            events = [EventRecord(run.run_id, 0, RunCreated(
                run.workflow_name, run.input, trace_context=self._trace_context),
                run.created_at)]
        else:
            try:
                events = await world.list_events(self.run_id)
            except CorruptRecordError as exc:
                await self._fail_corrupt(exc)
                return
        self._seq = events[-1].seq + 1 if events else 0
        if any(isinstance(e.event, TERMINAL_EVENTS) for e in events):
            return
        if telemetry.active:
            self._start_span(events, defn.name)
        started = next((e for e in events if isinstance(e.event, RunStarted)), None)
        first: list[EventRecord] = []
        if started is None:
            started = self._record(RunStarted())
            first.append(started)
            logger.info("run %s: started workflow %s", self.run_id, defn.name)
        self._meta = WorkflowMetadata(self.run_id, defn.name, started.created_at,
                                      run.parent_run_id)
        if defn.timeout is not None:
            self._deadline = started.created_at + dt.timedelta(seconds=defn.timeout)
        try:
            args, kwargs = defn.codec.decode(run.input)
        except Exception as exc:
            logger.error("run %s: its stored input cannot be decoded: %s", self.run_id, exc)
            end = self._record(RunFailed(ErrorInfo(
                "CorruptRecordError", f"run {self.run_id}: its stored input cannot be "
                f"decoded: {type(exc).__name__}: {exc}")))
            await world.append_events(self.run_id, [*first, end])
            self._span_ended(end.event)
            return
        try:
            instance = new_instance(defn, run, events, started.created_at, args, kwargs)
            self._instance = instance
            instance.start()
            self._replay(events)
        except NonDeterminismError as exc:
            logger.error("run %s: %s", self.run_id, exc)
            end = self._record(RunFailed(error_info(exc)))
            await world.append_events(self.run_id, [*first, end])
            self._span_ended(end.event)
            return
        # run_started goes with the first calls' events (one append less per run)
        self._unsent = first
        await self._resume_after_replay()
        if self._unsent:
            await world.append_events(self.run_id, self._take_unsent([]), wait=False)
        await self._loop()

    def _take_unsent(self, records: list[EventRecord]) -> list[EventRecord]:
        """`records` after the events recorded at start and not yet appended."""
        if self._unsent:
            records = [*self._unsent, *records]
            self._unsent = []
        return records

    def _start_span(self, events: list[EventRecord], workflow_name: str) -> None:
        """Open this actor's segment of the run's span, under the stored context."""
        created = events[0].event if events else None
        if isinstance(created, RunCreated):
            self._trace_context = created.trace_context
        self._span = telemetry.start_run_span(self._trace_context, self.run_id,
                                              workflow_name, replayed_events=len(events))

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
        await self._write_published([c for c in instance.calls.values()
                                     if isinstance(c, PublishCall) and c.cid in self._recorded])
        instance.new_calls = new_calls
        if self._deadline is not None:
            delay = (self._deadline - self.world.now()).total_seconds()
            if delay <= 0:  # past its deadline: start nothing new, end it first thing
                self.post(DeadlinePassed())
                return
            self._timers["deadline"] = self.world.timers.call_at(
                self._deadline, self.post, DeadlinePassed())
        await self._start_new_calls()

    # -- the live loop -------------------------------------------------------------------
    async def _loop(self) -> None:
        instance = self._instance
        assert instance is not None
        while True:
            if instance.done:
                await self._finish()
                return
            if not self._mailbox:
                if self._stalled():
                    await self._fail_stalled()
                    return
                if self._should_evict():
                    await self._evict()
                    return
                self._wakeup = asyncio.get_running_loop().create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
                continue
            messages = list(self._mailbox)
            self._mailbox.clear()
            if await self._process(messages):
                return

    async def _process(self, messages: list[Message]) -> bool:
        """Record and deliver a batch of messages; True if the run ended (timed out)."""
        instance = self._instance
        assert instance is not None
        records: list[EventRecord] = []
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
                case DeadlinePassed():
                    if self._deadline is not None:
                        assert self._meta is not None
                        timeout = (self._deadline - self._meta.started_at).total_seconds()
                        await self._end(RunFailed(ErrorInfo(
                            "WorkflowTimeoutError", f"workflow {instance.defn.name!r} timed "
                            f"out after {timeout:g}s")), records, inbox_ids)
                        logger.info("run %s: timed out", self.run_id)
                        return True
        if records or inbox_ids:
            await self.world.append_events(self.run_id, records, inbox_ids=inbox_ids)
        for record in deliveries:
            instance.deliver(record)
        await self._start_new_calls()
        return False

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
                task.cancel()
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

    def _record_retrying(self, outcome: StepRetrying, ended_at: dt.datetime
                         ) -> tuple[EventRecord, dt.datetime]:
        """Record a failed attempt that will be retried. The delay before the retry
        counts from this record, not from when the attempt ended: however long the
        outcome waited in the mailbox, the log never shows a shorter wait than asked."""
        record = self._record(outcome)
        late = record.created_at - ended_at
        if late <= dt.timedelta(0):
            return record, outcome.retry_at
        retry_at = outcome.retry_at + late
        return msgspec.structs.replace(record, event=msgspec.structs.replace(
            outcome, retry_at=retry_at)), retry_at

    async def _start_new_calls(self) -> None:
        instance = self._instance
        assert instance is not None
        calls = instance.take_new_calls()
        only = calls[0] if len(calls) == 1 else None
        if type(only) is StepCall and not instance.new_patch_markers:
            # the usual case, one step awaited: as below, in fewer moves
            record = self._record(StepStarted(only.cid, only.step.name, 1, only.input))
            self._attempts[only.cid] = 1
            await self.world.append_events(self.run_id, self._take_unsent([record]),
                                           wait=False)
            self._spawn_step(only, 1, record.created_at)
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

    # -- children ------------------------------------------------------------------------
    async def _create_child(self, call: ChildCall) -> None:
        """Create the child run (idempotent by its id) and run it here if there is room."""
        world, engine = self.world, self.engine
        local = engine.has_capacity
        # the child's spans go under this segment (or, unrecorded, the stored context)
        trace_context = (telemetry.carrier_of(self._span) if self._span is not None
                         else self._trace_context)
        record, created = await world.create_run(
            NewRun(call.child_run_id, call.defn.name, call.input, world.now(),
                   parent_run_id=self.run_id, trace_context=trace_context,
                   tags=call.tags),
            lease_owner=engine.worker_id if local else None,
            lease_seconds=world.lease_seconds)
        if created and local:
            engine.dispatch(call.child_run_id, fresh=record, trace_context=trace_context)
        elif not created and record.status.is_terminal:
            self.post(ChildCheck(call.child_run_id))

    def _schedule_child_recheck(self) -> None:
        """While children are open, look at them every CHILD_RECHECK even if this actor
        stays live (an evicted parent wakes for it through `_wake_at`)."""
        if "children" in self._timers:
            return

        def recheck() -> None:
            self._timers.pop("children", None)
            if self._children_open:
                for child_id in self._children_open:
                    self.post(ChildCheck(child_id))
                self._schedule_child_recheck()

        self._timers["children"] = asyncio.get_running_loop().call_later(
            CHILD_RECHECK.total_seconds(), recheck)

    async def _check_child(self, child_id: str) -> EventRecord | None:
        """`child_ended` for an open child that has ended (None: it has not, or it is
        not open); a child missing from the world is created."""
        instance = self._instance
        assert instance is not None
        cid = self._children_open.get(child_id)
        if cid is None:
            return None
        run = await self.world.get_run(child_id)
        if run is None:
            await self._create_child(instance.expect(cid, ChildCall))
            return None
        if not run.status.is_terminal:
            return None
        del self._children_open[child_id]
        if run.status == "continued":  # the child went on as the chain's next run
            next_id = msgspec.json.decode(bytes(run.output or b'""'), type=str)
            self._children_open[next_id] = cid
            return await self._check_child(next_id)
        return self._record(ChildEnded(cid, child_id, run.status.value,
                                       run.output or NO_METADATA, run.error))

    def _start_step(self, call: StepCall, attempt: int) -> EventRecord:
        record = self._record(StepStarted(call.cid, call.step.name, attempt, call.input))
        self._attempts[call.cid] = attempt
        self._spawn_step(call, attempt, record.created_at)
        return record

    def _spawn_step(self, call: StepCall, attempt: int, started_at: dt.datetime) -> None:
        self._steps[call.cid] = self.engine.spawn(
            self._run_step(call, attempt, started_at), name=f"step {call.step.name}")

    async def _run_step(self, call: StepCall, attempt: int, started_at: dt.datetime) -> None:
        assert self._meta is not None
        slots = self.engine.step_slots
        await slots.acquire()
        try:
            if call.step.queue is not None:
                # the queue's limits hold across processes; its slot is taken last, so
                # that the body starts as soon as it is granted
                holder = f"{self.engine.worker_id}/{self.run_id}/{call.cid}/{attempt}"
                async with hold_slot(self.world, get_queue(call.step.queue), holder,
                                     lease_seconds=self.world.lease_seconds):
                    outcome = await self._attempt(call, attempt, started_at)
            elif self._span is None:
                outcome = await self._attempt_body(call, attempt, started_at)
            else:
                outcome = await self._traced_attempt(call, attempt, started_at)
        finally:
            slots.release()
        self.post(StepFinished(call.cid, outcome, self.world.now()))

    async def _attempt(self, call: StepCall, attempt: int,
                       started_at: dt.datetime) -> StepOutcome:
        if self._span is not None:  # telemetry is on: the attempt is a span
            return await self._traced_attempt(call, attempt, started_at)
        return await self._attempt_body(call, attempt, started_at)

    async def _traced_attempt(self, call: StepCall, attempt: int,
                              started_at: dt.datetime) -> StepOutcome:
        assert self._meta is not None
        span = telemetry.start_step_span(self._span, self.run_id, self._meta.workflow_name,
                                         call.step.name, step_id_for(self.run_id, call.cid),
                                         attempt)
        if span is None:
            return await self._attempt_body(call, attempt, started_at)
        outcome: StepOutcome | None = None
        try:
            with telemetry.step_span_current(span):
                outcome = await self._attempt_body(call, attempt, started_at)
            return outcome
        finally:
            telemetry.end_step_span(span, outcome)

    async def _attempt_body(self, call: StepCall, attempt: int,
                            started_at: dt.datetime) -> StepOutcome:
        """One attempt by the engine's step runner. The runner reports failures as
        outcomes; should it raise, the attempt fails without retry (and the engine,
        whose task group runs this, goes on)."""
        assert self._meta is not None
        try:
            return await self.engine.step_runner(
                call.step, call.cid, attempt, call.input, self._meta, self.world, started_at)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("run %s: the step runner failed on step %r", self.run_id,
                             call.step.name)
            return StepFailed(call.cid, call.step.name, attempt, error_info(exc, fatal=True))
        except BaseException as exc:
            return StepFailed(call.cid, call.step.name, attempt, base_exception_info(
                exc, f"step {call.step.name!r}", fatal=True))

    # -- waiting ---------------------------------------------------------------------
    # on the world's timers, not the event loop's: a test clock moves them (and time)
    def _schedule_timer(self, call: TimerCall) -> None:
        self._timers[call.cid] = self.world.timers.call_at(call.resume_at, self.post,
                                                           TimerDue(call.cid))

    def _schedule_retry(self, cid: str, attempt: int, at: dt.datetime) -> None:
        self._retries[cid] = (attempt, at)
        self._timers["retry" + cid] = self.world.timers.call_at(at, self.post,
                                                                RetryDue(cid, attempt))

    def _wake_at(self) -> dt.datetime | None:
        instance = self._instance
        assert instance is not None
        times = [c.resume_at for c in instance.pending_timers()]
        times += [at for _, at in self._retries.values()]
        if self._deadline is not None:
            times.append(self._deadline)
        if self._children_open:
            times.append(self.world.now() + CHILD_RECHECK)
        return min(times, default=None)

    def _should_evict(self) -> bool:
        if self._steps:
            return False
        wake_at = self._wake_at()
        if wake_at is None:
            return True
        return (wake_at - self.world.now()).total_seconds() > self.engine.keep_alive

    def _stalled(self) -> bool:
        """The workflow waits, but for nothing that can come: no step attempt runs or
        waits for a retry, no timer is pending, no hook is open (and the mailbox is
        empty). Only workflow code could wake it, and it is all blocked."""
        instance = self._instance
        assert instance is not None
        return (not self._steps and not self._retries and not self._hooks_open
                and not self._children_open and not instance.waits_for_messages
                and not instance.new_calls and not instance.done
                and not instance.pending_timers())

    async def _fail_stalled(self) -> None:
        instance = self._instance
        assert instance is not None
        where = instance.blocked_at()
        message = (f"workflow {instance.defn.name!r} (run {self.run_id}) waits for "
                   f"something worldflow cannot deliver{f' at {where}' if where else ''}: "
                   f"no step, sleep or hook it started is pending, so nothing can wake "
                   f"it. Workflow code can only wait for {AWAITABLE_THINGS}; an asyncio "
                   f"Event, Queue or Future made in workflow code is completed only by "
                   f"workflow code. Do I/O and waiting on other systems inside a @step")
        await self._end(RunFailed(ErrorInfo("WorkflowAwaitError", message)), [], [])
        logger.info("run %s: failed: WorkflowAwaitError: %s", self.run_id, message)

    async def _evict(self) -> None:
        wake_at = self._wake_at()
        logger.debug("run %s: waiting until %s; evicted", self.run_id, wake_at or "input")
        await self._note_message_wait()
        self.releasing = True
        await self.world.release_run(self.run_id, self.engine.worker_id, wake_at)
        self._span_outcome = "waiting"

    def _message_came(self, topic: str) -> None:
        if self._noted_topics is not None and topic in self._noted_topics:
            self._noted_topics = None  # the noted wait is over: a next one is noted anew

    async def _note_message_wait(self) -> None:
        """Before the run is set aside: if `receive()` waits, say on which topics (once
        per change), so that the UI and `inspect` can show what the run waits for."""
        instance = self._instance
        assert instance is not None
        topics = instance.waiting_topics()
        if not topics or topics == self._noted_topics:
            return
        await self.world.append_events(self.run_id,
                                       [self._record(MessageWaiting(list(topics)))])
        self._noted_topics = topics

    # -- the end -----------------------------------------------------------------------
    async def _finish(self) -> None:
        instance = self._instance
        assert instance is not None and instance.root is not None
        root = instance.root
        event: Event
        if not root.cancelled() and isinstance(root.exception(), ContinueAsNew):
            await self._continue_as_new(root.exception())  # type: ignore[arg-type]
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
        await self._end(event, [], [])
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


async def after_end(world: World, run_id: str, parent_run_id: str | None,
                    children_to_cancel: list[str]) -> None:
    """After a run's terminal event: cancel its unfinished children, and tell its
    parent (a lost notice is found by the parent's periodic look, CHILD_RECHECK)."""
    for child_id in children_to_cancel:
        try:
            await world.request_cancel(child_id)
        except Exception:
            logger.warning("run %s: could not cancel child run %s", run_id, child_id,
                           exc_info=True)
    if parent_run_id is not None:
        try:
            await world.child_ended(parent_run_id, run_id)
        except Exception:
            logger.warning("run %s: could not tell parent run %s that it ended", run_id,
                           parent_run_id, exc_info=True)


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
