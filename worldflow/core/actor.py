"""One actor per live run: it owns the workflow's instance and a mailbox.

Step outcomes, timer firings, hook payloads and cancels reach the workflow only
through the mailbox. The actor records each as an event (awaiting the commit: a
completion is durable before the workflow acts on it), then delivers the events to
the workflow one by one, in log order, exactly as replay will. When the run only
waits (a sleep, a hook, a retry backoff) the actor gives the run back to the queue
and exits: a waiting run holds no memory, and is replayed when it wakes.

RunActor is composed of one class per concern, each in its own module over
actor_state.ActorState: actor_start (replay), actor_live (messages and new calls),
actor_steps, actor_children and actor_end. This module holds its life (`run`), its
loop, and when it lets the run go (eviction, wake-ups).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from worldflow.core import telemetry
from worldflow.core.actor_children import ChildRuns
from worldflow.core.actor_end import RunEnding, cancel_without_code
from worldflow.core.actor_live import LiveRun
from worldflow.core.actor_start import RunStart, new_instance
from worldflow.core.actor_state import ActorState
from worldflow.core.actor_steps import StepAttempts
from worldflow.core.context import WorkflowMetadata
from worldflow.core.events import (
    TERMINAL_EVENTS,
    ErrorInfo,
    EventRecord,
    MessageWaiting,
    RunCreated,
    RunFailed,
    RunStarted,
)
from worldflow.core.instance import AWAITABLE_THINGS, WorkflowInstance
from worldflow.core.mailbox import ChildCheck
from worldflow.core.registry import get_workflow
from worldflow.core.steps import error_info
from worldflow.errors import CorruptRecordError, NonDeterminismError

__all__ = ["RunActor", "cancel_without_code", "new_instance"]

logger = logging.getLogger("worldflow.run")

#: a parent waiting for children wakes this often to look at them, in case the news of a
#: child's end was lost (its process stopped between its last event and telling us)
CHILD_RECHECK = dt.timedelta(minutes=5)


class RunActor(RunStart, LiveRun, StepAttempts, ChildRuns, RunEnding, ActorState):
    """The actor of one live run: the concerns of worldflow.core.actor_* composed, its
    life (`run`), its loop, and when it lets the run go (eviction)."""

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
                self._steps.clear()  # stopped attempts: their errors hold this actor
            if self._instance is not None and not self._instance.done:
                self._instance.discard()

    def ended_instance(self) -> WorkflowInstance | None:
        """The workflow instance of a run that ended here (None: it did not end, e.g.
        evicted or stopped), once `run` has returned."""
        instance = self._instance
        return instance if instance is not None and instance.done else None

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
            if run.started_at is not None:  # created started (NewRun.started)
                events.append(EventRecord(run.run_id, 1, RunStarted(), run.started_at))
                if self.engine.log_events:
                    self.engine.log_event(events[-1])
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
        if first or self._fresh is not None:
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
        if self._unsent and not self._mailbox:  # (else they go with what it holds)
            await world.append_events(self.run_id, self._take_unsent([]), wait=False)
        await self._loop()

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

    # -- waiting: eviction and wake-ups (CHILD_RECHECK is read here, at each use) -------
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

    async def _note_message_wait(self) -> None:
        """Before the run is set aside: if `receive()` waits, say on which topics (once
        per change), so that the UI and `inspect` can show what the run waits for."""
        instance = self._instance
        assert instance is not None
        topics = instance.waiting_topics()
        if not topics or topics == self._noted_topics:
            return
        await self.world.append_events(self.run_id, self._take_unsent(
            [self._record(MessageWaiting(list(topics)))]))
        self._noted_topics = topics

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
