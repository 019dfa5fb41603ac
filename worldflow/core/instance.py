"""A workflow run's code, executed on a deterministic event loop of its own.

Workflow functions are ordinary `async def` code: they `await` steps, use
`asyncio.gather`, `asyncio.wait_for`, `asyncio.sleep`. Each run gets a private
`WorkflowLoop` that the run's actor steps synchronously: it delivers one event,
then runs every ready callback until none is left. Nothing else drives it, so the
order in which tasks wake up depends only on the order of delivered events, and
replaying the log reproduces the run exactly. Timers (`asyncio.sleep`,
`wait_for` timeouts, `worldflow.sleep`) become durable waits on this loop.

Every step call, timer and hook gets a correlation id: its position in the program
order (1, 2, 3, ...). Calls are collected as commands the actor carries out.
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import dataclasses
import logging
import os
import random as _random
import secrets
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

from worldflow.core.events import (
    CancelRequested,
    ChildEnded,
    ErrorInfo,
    HookReceived,
    MessageReceived,
    StepCompleted,
    StepFailed,
    WaitCompleted,
)
from worldflow.core.run_errors import run_error
from worldflow.core.workflow_loop import (
    AWAITABLE_THINGS,
    WorkflowLoop,
    _DurableTimerHandle,
    current_instance,
)
from worldflow.errors import (
    FatalStepError,
    NonDeterminismError,
    StepFailedError,
)

if TYPE_CHECKING:
    import contextvars
    import datetime as dt
    import types
    from collections.abc import Callable, Iterator

    from msgspec import Raw

    from worldflow.core.events import EventRecord
    from worldflow.core.registry import StepDef, WorkflowDef

__all__ = ["AWAITABLE_THINGS", "ChildCall", "HookCall", "PublishCall", "StepCall",
           "TimerCall", "WorkflowInstance", "WorkflowLoop", "current_instance"]

logger = logging.getLogger("worldflow.workflow")

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

@dataclasses.dataclass(slots=True, eq=False)
class StepCall:
    cid: str
    step: StepDef
    input: Raw
    future: asyncio.Future[Any]
    kind: str = "step"


@dataclasses.dataclass(slots=True, eq=False)
class TimerCall:
    cid: str
    resume_at: dt.datetime
    handle: _DurableTimerHandle
    kind: str = "wait"
    fired: bool = False


@dataclasses.dataclass(slots=True, eq=False)
class HookCall:
    cid: str
    token: str
    hook: Any  # worldflow.core.hooks.Hook
    kind: str = "hook"


@dataclasses.dataclass(slots=True, eq=False)
class ChildCall:
    cid: str
    defn: WorkflowDef
    input: Raw
    child_run_id: str
    future: asyncio.Future[Any]
    kind: str = "child run"
    #: the child's tags (`start(..., tags=)` in the workflow)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True, eq=False)
class PublishCall:
    cid: str
    key: str
    value: Raw
    index: int  # how many values of `key` were published before this one
    kind: str = "set_event"


Call = StepCall | TimerCall | HookCall | ChildCall | PublishCall


class WorkflowInstance:
    """One run's workflow coroutine plus the bookkeeping that makes it replayable."""

    def __init__(self, defn: WorkflowDef, run_id: str, args: list[Any],
                 kwargs: dict[str, Any], started_at: dt.datetime) -> None:
        self.defn = defn
        self.run_id = run_id
        self.started_at = started_at
        self.now = started_at
        # asyncio's stubs mark every loop method abstract; WorkflowLoop implements the
        # ones tasks and futures use, and refuses I/O
        self.loop = WorkflowLoop(self)  # type: ignore[abstract]
        self._random: _random.Random | None = None  # made on first use (most runs never)
        self.calls: dict[str, Call] = {}
        self.new_calls: list[Call] = []
        self.recorded_tokens: dict[str, str] = {}  # cid -> hook token, from the log
        self._next_cid = 1
        self._args, self._kwargs = args, kwargs
        self.root: asyncio.Task[Any] | None = None
        #: messages taken into the log but not yet received, and `receive` calls
        #: waiting, by topic (see worldflow.core.messages)
        self.messages: dict[str, collections.deque[Raw]] = {}
        self.message_waiters: dict[str, collections.deque[asyncio.Future[Any]]] = {}
        self.parent_run_id: str | None = None
        self.published: dict[str, int] = {}  # key -> values published (set_event)
        #: versioning (worldflow.core.versioning): patched()'s answers by change id;
        #: change ids whose marker the log holds; markers to record; the last position
        #: the log holds a call at (a position at or below it is being replayed)
        self.patches: dict[str, bool] = {}
        self.recorded_patches: set[str] = set()
        self.new_patch_markers: list[tuple[str, int]] = []
        self.log_last_position = 0

    @property
    def random(self) -> _random.Random:
        """The run's random generator, seeded by its id: the same sequence on replay."""
        if self._random is None:
            self._random = _random.Random(self.run_id)
        return self._random

    # -- driving -----------------------------------------------------------------
    def start(self) -> None:
        self.root = self.loop.create_task(self.defn.fn(*self._args, **self._kwargs))
        self.loop.run_ready()

    def release_failure(self) -> None:
        """Once its run is over, let the workflow's failure (or cancellation) go: the
        traceback of the exception that ended it holds the frames it went through and,
        through theirs, the frames that had called into the workflow (its actor's,
        holding the actor and this instance): a reference cycle, which only the garbage
        collector's full passes would free, growing with every failed run. Those frames
        are finished (the actor has returned; this is only for a run whose actor is
        done): their locals are cleared, up to the first frame still running (the
        caller's)."""
        root = self.root
        if root is None or not root.done():
            return
        try:
            error = root.exception()
        except asyncio.CancelledError as cancelled:  # the task gives its error up
            error = cancelled
        if error is not None:
            _clear_finished_frames(error.__traceback__)
            # a cancelled root's error was raised here, so its traceback holds this
            # frame, which must not hold the error once it returns
            error = None
        # so do the failures the workflow caught: on Python 3.12+ the frames that
        # delivered one (which hold its call, and so its future and the error) stay
        # linked to the workflow's frame its traceback holds
        for future in self._call_futures():
            if future.done() and not future.cancelled():
                caught = future.exception()
                if caught is not None:
                    _clear_finished_frames(caught.__traceback__)
                    caught = None
        self.root = None
        self.calls.clear()

    def _call_futures(self) -> Iterator[asyncio.Future[Any]]:
        """The futures of the calls that have one (steps and child runs)."""
        for call in self.calls.values():
            future = getattr(call, "future", None)
            if future is not None:
                yield future

    def discard(self) -> None:
        """Drop an unfinished workflow (its run was evicted or stopped): close the
        coroutines of its pending tasks now, as garbage collection would later, but in
        order, so that calls still waiting to start are closed with the task that holds
        them instead of warning that they were never awaited."""
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self.loop)
        try:
            for task in list(asyncio.all_tasks(self.loop)):
                try:
                    task.get_coro().close()
                except BaseException:  # workflow code that refuses to stop: GC's business
                    logger.debug("run %s: closing a task failed", self.run_id,
                                 exc_info=True)
            # a pending task and the future it waits for hold each other (the future's
            # callback wakes the task): cancel the futures and drop the wake-ups, so
            # that the run's objects are freed with it, not by the collector
            for future in self._call_futures():
                future.cancel()
            self.loop._ready.clear()
        finally:
            asyncio.events._set_running_loop(previous)

    @property
    def done(self) -> bool:
        return self.root is not None and self.root.done()

    def deliver(self, record: EventRecord) -> None:
        """Feed one completion event to the workflow and let it run until it blocks."""
        self.now = max(self.now, record.created_at)
        match record.event:
            case StepCompleted(correlation_id=cid, step_name=name, output=output):
                call = self.expect(cid, StepCall, name)
                if not call.future.done():
                    try:
                        call.future.set_result(call.step.codec.decode_result(output, "step"))
                    except Exception as exc:
                        call.future.set_exception(exc)
            case StepFailed(correlation_id=cid, step_name=name, attempt=attempt, error=error):
                call = self.expect(cid, StepCall, name)
                if not call.future.done():
                    call.future.set_exception(step_error(name, attempt, error))
            case WaitCompleted(correlation_id=cid):
                timer = self.expect(cid, TimerCall)
                timer.fired = True
                handle = timer.handle
                if not handle._cancelled:
                    self.loop._ready.append(handle)
            case HookReceived(correlation_id=cid, payload=payload):
                self.expect(cid, HookCall).hook._deliver(payload)
            case MessageReceived(topic=topic, payload=payload):
                self.deliver_message(topic, payload)
            case CancelRequested():
                if self.root is not None and not self.root.done():
                    self.root.cancel()  # CancelledError at the workflow's current await
            case ChildEnded(correlation_id=cid, child_run_id=child_id, status=status,
                            output=output, error=error):
                child = self.expect(cid, ChildCall)
                if not child.future.done():
                    if status == "completed":
                        try:
                            child.future.set_result(child.defn.codec.decode_result(
                                output, "workflow"))
                        except Exception as exc:
                            child.future.set_exception(exc)
                    else:
                        child.future.set_exception(run_error(child_id, status, error))
        self.loop.run_ready()

    def deliver_message(self, topic: str, payload: Raw) -> None:
        """Hand a message to the oldest `receive(topic)` still waiting, or keep it for
        the next one."""
        waiters = self.message_waiters.get(topic)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # a receive that timed out or was cancelled is skipped
                waiter.set_result(payload)
                return
        self.messages.setdefault(topic, collections.deque()).append(payload)

    @property
    def waits_for_messages(self) -> bool:
        """Some `receive` call waits (so outside input can wake the run)."""
        return any(not w.done() for ws in self.message_waiters.values() for w in ws)

    def waiting_topics(self) -> tuple[str, ...]:
        """The topics some `receive` call waits on, sorted."""
        return tuple(sorted(topic for topic, waiters in self.message_waiters.items()
                            if any(not w.done() for w in waiters)))

    def expect(self, cid: str, kind: type[_C], step_name: str | None = None) -> _C:
        """The call at position `cid`, which the log records as a `kind` call (of step
        `step_name`); `NonDeterminismError` if the code made no such call there."""
        call = self.calls.get(cid)
        if isinstance(call, kind) and (step_name is None or not isinstance(call, StepCall)
                                       or call.step.name == step_name):
            return call
        recorded = f"step {step_name!r}" if step_name else f"a {_KIND_NAMES[kind]}"
        parts = {"workflow": self.defn.name, "run_id": self.run_id, "position": cid,
                 "expected": recorded}
        if call is None:
            raise NonDeterminismError(
                f"workflow {self.defn.name!r} (run {self.run_id}): the log records "
                f"{recorded} at position {cid}, but the workflow code made no such call "
                f"there; the code changed under a running run", found="no call", **parts)
        made = f"step {call.step.name!r}" if isinstance(call, StepCall) else f"a {call.kind}"
        raise NonDeterminismError(
            f"workflow {self.defn.name!r} (run {self.run_id}): at position {cid} the code "
            f"made {made} but the log records {recorded}; the code changed under a "
            f"running run", found=made, **parts)

    def take_new_calls(self) -> list[Call]:
        calls, self.new_calls = self.new_calls, []
        return calls

    def blocked_at(self) -> str:
        """Where the workflow's main task waits, as "file:line in function": the
        innermost frame of the user's code (not asyncio's or worldflow's), or ""."""
        where = ""
        awaited: Any = self.root.get_coro() if self.root is not None else None
        for _ in range(200):  # down the chain of awaits
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:
                break
            filename = frame.f_code.co_filename
            if not filename.startswith(_LIBRARY_DIRS):
                where = f"{filename}:{frame.f_lineno} in {frame.f_code.co_name}"
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom",
                                                                    None)
        return where

    # -- calls made by workflow code ---------------------------------------------------
    def _cid(self) -> str:
        cid = str(self._next_cid)
        self._next_cid += 1
        return cid

    def call_step(self, step: StepDef, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        encoded = step.codec.encode(args, kwargs, kind="step")
        cid = self._cid()
        future = self.loop.create_future()
        call = StepCall(cid, step, encoded, future)
        self.calls[cid] = call
        self.new_calls.append(call)
        return future

    def create_timer(self, resume_at: dt.datetime, callback: Callable[..., object],
                     args: tuple[Any, ...], context: contextvars.Context | None
                     ) -> asyncio.TimerHandle:
        cid = self._cid()
        handle = _DurableTimerHandle(resume_at.timestamp(), callback, args, self.loop, context)
        handle.cid = cid
        call = TimerCall(cid, resume_at, handle)
        self.calls[cid] = call
        self.new_calls.append(call)
        return handle

    def create_hook(self, token: str | None, hook_factory: Callable[[str, str], Any]) -> Any:
        cid = self._cid()
        recorded = self.recorded_tokens.get(cid)
        if recorded is not None:
            token = recorded
        elif token is None:
            token = secrets.token_urlsafe(24)  # 192 bits
        hook = hook_factory(token, cid)
        call = HookCall(cid, token, hook)
        self.calls[cid] = call
        self.new_calls.append(call)
        return hook

    def call_child(self, defn: WorkflowDef, args: tuple[Any, ...], kwargs: dict[str, Any],
                   run_id: str | None = None,
                   tags: dict[str, str] | None = None) -> ChildCall:
        """Start workflow `defn` as a child run (its id: this run's id and the call's
        position, unless `run_id` is given); its future is the child's result."""
        encoded = defn.codec.encode(args, kwargs, kind="workflow")
        cid = self._cid()
        call = ChildCall(cid, defn, encoded, run_id or f"{self.run_id}:{cid}",
                         self.loop.create_future(), tags=dict(tags or {}))
        self.calls[cid] = call
        self.new_calls.append(call)
        return call

    def publish(self, key: str, value: Raw) -> PublishCall:
        """Publish `value` under `key` (`set_event`): recorded as the next call."""
        index = self.published.get(key, 0)
        self.published[key] = index + 1
        call = PublishCall(self._cid(), key, value, index)
        self.calls[call.cid] = call
        self.new_calls.append(call)
        return call

    # -- what waits ------------------------------------------------------------------
    def pending_timers(self) -> list[TimerCall]:
        return [c for c in self.calls.values()
                if isinstance(c, TimerCall) and not c.handle._cancelled
                and not c.fired]


_C = TypeVar("_C", StepCall, TimerCall, HookCall, ChildCall, PublishCall)
#: frames of these packages are not where the user's workflow code waits
_LIBRARY_DIRS = (os.path.dirname(asyncio.__file__) + os.sep,
                 os.path.dirname(os.path.dirname(__file__)) + os.sep)
_KIND_NAMES: dict[type[Call], str] = {StepCall: "step", TimerCall: "wait", HookCall: "hook",
                                      ChildCall: "child run", PublishCall: "set_event"}


def step_error(step_name: str, attempt: int, error: ErrorInfo) -> Exception:
    """The exception a failed step raises in the workflow."""
    if error.fatal:  # both a StepFailedError and a FatalError
        return FatalStepError(step_name, error.type, error.message, error.traceback, attempt)
    return StepFailedError(step_name, error.type, error.message, error.traceback, attempt)


def _clear_finished_frames(tb: types.TracebackType | None) -> None:
    """Clear the locals of the frames `tb` holds and of the frames that called them,
    each chain up to its first frame still running. For a traceback whose frames have
    all returned, as a finished run's are: a suspended coroutine's frame would be closed
    by clearing it, so this is never called while the actor that made them runs."""
    seen: set[int] = set()
    while tb is not None:
        frame: types.FrameType | None = tb.tb_frame
        while frame is not None and id(frame) not in seen:
            seen.add(id(frame))
            try:
                frame.clear()
            except RuntimeError:  # running: the caller, and all above it
                break
            frame = frame.f_back
        tb = tb.tb_next
