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
import contextvars
import dataclasses
import datetime as dt
import logging
import random as _random
import secrets
from typing import TYPE_CHECKING, Any

from worldflow.core.events import (
    ErrorInfo,
    HookReceived,
    StepCompleted,
    StepFailed,
    WaitCompleted,
)
from worldflow.errors import FatalError, NonDeterminismError, StepFailedError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from msgspec import Raw

    from worldflow.core.events import EventRecord
    from worldflow.core.registry import StepDef, WorkflowDef

__all__ = ["HookCall", "StepCall", "TimerCall", "WorkflowInstance", "WorkflowLoop",
           "current_instance"]

logger = logging.getLogger("worldflow.workflow")


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


Call = StepCall | TimerCall | HookCall


class _DurableTimerHandle(asyncio.TimerHandle):
    """An `asyncio.TimerHandle` whose firing is a `wait_completed` event in the log."""

    __slots__ = ("cid",)


class WorkflowLoop(asyncio.AbstractEventLoop):
    """The minimal event loop a workflow's tasks run on; driven by `WorkflowInstance`."""

    def __init__(self, instance: WorkflowInstance) -> None:
        self._instance = instance
        self._ready: collections.deque[asyncio.Handle] = collections.deque()

    # -- what asyncio's tasks and futures use --------------------------------------
    def call_soon(self, callback: Callable[..., Any], *args: Any,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    call_soon_threadsafe = call_soon

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any,
                context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        return self._instance.create_timer(
            dt.datetime.fromtimestamp(when, dt.UTC), callback, args, context)

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any,
                   context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        return self.call_at(self.time() + max(0.0, delay), callback, *args, context=context)

    def time(self) -> float:
        return self._instance.now.timestamp()

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None,
                    context: contextvars.Context | None = None) -> asyncio.Task[Any]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        self._instance.timer_cancelled(handle)

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return True

    def is_closed(self) -> bool:
        return False

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        logger.debug("workflow %s: %s", self._instance.run_id, context.get("message"),
                     exc_info=exc)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)

    # -- I/O belongs in steps ------------------------------------------------------------
    def _no_io(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("workflow code cannot do I/O, threads or subprocesses: "
                           "do them inside a @step")

    run_in_executor = getaddrinfo = create_connection = create_server = _no_io
    subprocess_exec = subprocess_shell = sock_connect = sock_recv = sock_sendall = _no_io

    def run_ready(self) -> None:
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        try:
            ready = self._ready
            while ready:
                handle = ready.popleft()
                if not handle._cancelled:
                    handle._run()
        finally:
            asyncio.events._set_running_loop(previous)


_current: contextvars.ContextVar[WorkflowInstance | None] = contextvars.ContextVar(
    "worldflow_workflow", default=None)


def current_instance() -> WorkflowInstance | None:
    """The running workflow's instance, or None outside workflow code."""
    loop = asyncio.events._get_running_loop()
    if isinstance(loop, WorkflowLoop):
        return loop._instance
    return None


class WorkflowInstance:
    """One run's workflow coroutine plus the bookkeeping that makes it replayable."""

    def __init__(self, defn: WorkflowDef, run_id: str, args: list[Any],
                 kwargs: dict[str, Any], started_at: dt.datetime) -> None:
        self.defn = defn
        self.run_id = run_id
        self.started_at = started_at
        self.now = started_at
        self.loop = WorkflowLoop(self)
        self.random = _random.Random(run_id)
        self.calls: dict[str, Call] = {}
        self.new_calls: list[Call] = []
        self.recorded_tokens: dict[str, str] = {}  # cid -> hook token, from the log
        self._next_cid = 1
        self._args, self._kwargs = args, kwargs
        self.root: asyncio.Task[Any] | None = None

    # -- driving -----------------------------------------------------------------
    def start(self) -> None:
        context = contextvars.copy_context()
        context.run(_current.set, self)
        self.root = asyncio.Task(self.defn.fn(*self._args, **self._kwargs), loop=self.loop,
                                 context=context)
        self.loop.run_ready()

    @property
    def done(self) -> bool:
        return self.root is not None and self.root.done()

    def deliver(self, record: EventRecord) -> None:
        """Feed one completion event to the workflow and let it run until it blocks."""
        self.now = max(self.now, record.created_at)
        event = record.event
        cid = getattr(event, "correlation_id", None)
        call = self.calls.get(cid) if cid is not None else None
        match event:
            case StepCompleted(step_name=name, output=output):
                call = self._expect(call, cid, "step", name)
                assert isinstance(call, StepCall)
                if not call.future.done():
                    try:
                        call.future.set_result(call.step.codec.decode_result(output))
                    except Exception as exc:
                        call.future.set_exception(exc)
            case StepFailed(step_name=name, attempt=attempt, error=error):
                call = self._expect(call, cid, "step", name)
                assert isinstance(call, StepCall)
                if not call.future.done():
                    call.future.set_exception(step_error(name, attempt, error))
            case WaitCompleted():
                call = self._expect(call, cid, "wait", None)
                assert isinstance(call, TimerCall)
                call.fired = True
                handle = call.handle
                if not handle._cancelled:
                    self.loop._ready.append(handle)
            case HookReceived(payload=payload):
                call = self._expect(call, cid, "hook", None)
                assert isinstance(call, HookCall)
                call.hook._deliver(payload)
        self.loop.run_ready()

    def _expect(self, call: Call | None, cid: str | None, kind: str,
                step_name: str | None) -> Call:
        if call is None:
            what = f"step {step_name!r}" if step_name else f"a {kind}"
            raise NonDeterminismError(
                f"workflow {self.defn.name!r} (run {self.run_id}): the log records {what} at "
                f"position {cid}, but the workflow code made no such call there; the code "
                f"changed under a running run")
        check_match(self, call, kind, step_name)
        return call

    def take_new_calls(self) -> list[Call]:
        calls, self.new_calls = self.new_calls, []
        return calls

    def pending_steps(self) -> list[StepCall]:
        return [c for c in self.calls.values()
                if isinstance(c, StepCall) and not c.future.done()]

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

    def create_timer(self, resume_at: dt.datetime, callback: Callable[..., Any],
                     args: tuple[Any, ...], context: contextvars.Context | None
                     ) -> asyncio.TimerHandle:
        cid = self._cid()
        handle = _DurableTimerHandle(resume_at.timestamp(), callback, args, self.loop, context)
        handle.cid = cid
        call = TimerCall(cid, resume_at, handle)
        self.calls[cid] = call
        self.new_calls.append(call)
        return handle

    def timer_cancelled(self, handle: asyncio.TimerHandle) -> None:
        """A cancelled timer is no longer waited for (it stays in the log as created)."""

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

    # -- what waits ------------------------------------------------------------------
    def pending_timers(self) -> list[TimerCall]:
        return [c for c in self.calls.values()
                if isinstance(c, TimerCall) and not c.handle._cancelled
                and not c.fired]


def check_match(instance: WorkflowInstance, call: Call, kind: str,
                step_name: str | None) -> None:
    if call.kind != kind or (kind == "step" and step_name is not None
                             and call.step.name != step_name):  # type: ignore[union-attr]
        made = (f"step {call.step.name!r}" if isinstance(call, StepCall)  # type: ignore[union-attr]
                else f"a {call.kind}")
        recorded = f"step {step_name!r}" if kind == "step" else f"a {kind}"
        raise NonDeterminismError(
            f"workflow {instance.defn.name!r} (run {instance.run_id}): at position {call.cid} "
            f"the code made {made} but the log records {recorded}; the code changed under "
            f"a running run")


def step_error(step_name: str, attempt: int, error: ErrorInfo) -> Exception:
    if error.fatal:
        return FatalError(error.message, error_type=error.type, traceback=error.traceback,
                          step_name=step_name)
    return StepFailedError(step_name, error.type, error.message, error.traceback, attempt)
