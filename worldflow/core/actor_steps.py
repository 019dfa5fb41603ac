"""Step attempts of a run's actor: each runs as a task of the actor (or, if its body
cannot suspend, to its end in the actor's turn) and posts its outcome to the mailbox; a
failed attempt that will be retried waits on a timer."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING

import msgspec

from worldflow.core import telemetry
from worldflow.core.actor_state import ActorState
from worldflow.core.eager import run_at_once, start_eager
from worldflow.core.events import EventRecord, StepFailed, StepRetrying, StepStarted
from worldflow.core.mailbox import RetryDue, StepFinished, StepTaskFailed
from worldflow.core.queues import get_queue, hold_slot
from worldflow.core.records import step_id_for
from worldflow.core.steps import base_exception_info, error_info, run_step_attempt

if TYPE_CHECKING:
    from worldflow.core.instance import StepCall
    from worldflow.core.steps import StepOutcome

logger = logging.getLogger("worldflow.run")


class StepAttempts(ActorState):
    """Run step attempts as the engine's tasks; schedule retries."""

    def _start_step(self, call: StepCall, attempt: int) -> EventRecord:
        record = self._record(StepStarted(call.cid, call.step.name, attempt, call.input))
        self._attempts[call.cid] = attempt
        self._spawn_step(call, attempt, record.created_at)
        return record

    def _spawn_step(self, call: StepCall, attempt: int, started_at: dt.datetime) -> None:
        """Start the attempt as a task of this actor (which cancels and awaits it when it
        stops), eagerly: an attempt that does not suspend has posted its outcome when
        this returns, and the actor takes it up without sleeping (see core.eager). An
        attempt that cannot suspend (a step body without await, run by this process
        without a timeout, queue or span, a step slot free) needs no task: it runs to
        its end here."""
        step = call.step
        engine = self.engine
        if (step.never_suspends and step.timeout is None and step.queue is None
                and self._span is None and engine.step_runner is run_step_attempt
                and not engine.step_slots.locked()):
            task = run_at_once(self._run_step(call, attempt, started_at),
                               name=f"step {step.name}")
            if task is not None:  # (it suspended after all: it goes on as a task)
                self._steps[call.cid] = task
            return
        self._steps[call.cid] = start_eager(self._run_step(call, attempt, started_at),
                                            name=f"step {call.step.name}")

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
        except Exception as exc:  # the world failed under the queue slot: the actor stops
            self.post(StepTaskFailed(call.cid, exc))
            return
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


    # on the world's timers, not the event loop's: a test clock moves them (and time)
    def _schedule_retry(self, cid: str, attempt: int, at: dt.datetime) -> None:
        self._retries[cid] = (attempt, at)
        self._timers["retry" + cid] = self.world.timers.call_at(at, self.post,
                                                                RetryDue(cid, attempt))
