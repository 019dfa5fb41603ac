"""The minimal event loop a workflow's tasks run on, driven by its `WorkflowInstance`.

`WorkflowLoop` implements what asyncio's tasks and futures use (call_soon, timers,
futures, tasks) and refuses I/O; the instance steps it synchronously (`run_ready`), so
the order in which a workflow's tasks wake depends only on the events delivered.
Timers become durable waits (`_DurableTimerHandle`), and a future of another event loop
awaited by workflow code is refused at the await (`_WorkflowCoroutine`).
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import datetime as dt
import logging
import weakref
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

from worldflow.errors import WorkflowAwaitError

if TYPE_CHECKING:
    import contextvars
    import types
    from collections.abc import Callable, Coroutine, Generator

    from worldflow.core.instance import WorkflowInstance

__all__ = ["AWAITABLE_THINGS", "WorkflowLoop", "current_instance"]

logger = logging.getLogger("worldflow.workflow")

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

#: what workflow code may wait for; said whenever it waits for something else
AWAITABLE_THINGS = ("a step, sleep, hook, message or child run (or asyncio tools such as "
                    "gather, wait_for and Semaphore built on them)")


class _DurableTimerHandle(asyncio.TimerHandle):
    """An `asyncio.TimerHandle` whose firing is a `wait_completed` event in the log."""

    __slots__ = ("cid",)
    cid: str


class _WorkflowCoroutine(collections.abc.Coroutine[Any, Any, Any]):
    """Workflow code as its task runs it: a future of another event loop that the code
    awaits (a database driver's or HTTP client's call) is refused at the await with a
    `WorkflowAwaitError`, instead of asyncio's cross-loop error or a run that hangs.

    One attribute check per suspension of a workflow task: nothing on the step path.
    """

    __slots__ = ("_coro", "_loop")

    def __init__(self, coro: Coroutine[Any, Any, Any], loop: WorkflowLoop) -> None:
        self._coro = coro
        self._loop = loop

    def send(self, value: Any) -> Any:
        yielded = self._coro.send(value)
        if yielded is None or getattr(yielded, "_loop", self._loop) is self._loop:
            return yielded
        return self._refuse(yielded)

    def throw(self, exc: Any, value: Any = None, tb: Any = None, /) -> Any:
        try:
            if value is None and tb is None:
                yielded = self._coro.throw(exc)
            else:  # the legacy three-argument form
                yielded = self._coro.throw(exc, value, tb)
        finally:
            # a frame of the workflow that catches `exc` has this one as its caller:
            # `exc` must not stay in its locals (a cycle through its traceback)
            del exc, value, tb
        if yielded is None or getattr(yielded, "_loop", self._loop) is self._loop:
            return yielded
        return self._refuse(yielded)

    def _refuse(self, yielded: Any) -> Any:
        while yielded is not None and getattr(yielded, "_loop", self._loop) is not self._loop:
            # the future is not ours to wait on: asyncio would otherwise complain about
            # "a different loop" (or, for a bare future, wait forever)
            if hasattr(yielded, "_asyncio_future_blocking"):
                yielded._asyncio_future_blocking = False
            shown = repr(yielded)
            if len(shown) > 120:
                shown = shown[:117] + "..."
            yielded = self._coro.throw(WorkflowAwaitError(
                f"workflow {self._loop._instance.defn.name!r} (run "
                f"{self._loop._instance.run_id}) awaited {shown}, which belongs to another "
                f"event loop: workflow code can only wait for {AWAITABLE_THINGS}. Do I/O "
                f"(database queries, HTTP calls, other clients) inside a @step"))
        return yielded

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coro.__await__()

    # what asyncio shows of a task's coroutine (repr, get_stack)
    @property
    def cr_frame(self) -> types.FrameType | None:
        return getattr(self._coro, "cr_frame", None)

    @property
    def cr_await(self) -> Any:
        return getattr(self._coro, "cr_await", None)

    @property
    def cr_running(self) -> bool:
        return bool(getattr(self._coro, "cr_running", False))

    @property
    def cr_code(self) -> types.CodeType | None:
        return getattr(self._coro, "cr_code", None)


class WorkflowLoop(asyncio.AbstractEventLoop):
    """The minimal event loop a workflow's tasks run on; driven by `WorkflowInstance`.

    It holds its instance weakly (the instance, its actor's, holds it): the tasks and
    futures of a run all point at their loop, so a strong reference back would make
    every ended run a reference cycle (18 objects) that only the garbage collector's
    next pass frees, instead of reference counting as soon as the actor lets go."""

    def __init__(self, instance: WorkflowInstance) -> None:
        self._instance_ref = weakref.ref(instance)
        self._run_id = instance.run_id
        self._ready: collections.deque[asyncio.Handle] = collections.deque()

    @property
    def _instance(self) -> WorkflowInstance:
        instance = self._instance_ref()
        if instance is None:
            raise WorkflowAwaitError(f"run {self._run_id}: its workflow was stopped; it "
                                     f"can no longer wait for anything")
        return instance

    # -- what asyncio's tasks and futures use --------------------------------------
    def call_soon(self, callback: Callable[[*_Ts], object], *args: *_Ts,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    call_soon_threadsafe = call_soon

    def call_at(self, when: float, callback: Callable[[*_Ts], object],
                *args: *_Ts, context: contextvars.Context | None = None
                ) -> asyncio.TimerHandle:
        return self._instance.create_timer(
            dt.datetime.fromtimestamp(when, dt.UTC), callback, args, context)

    def call_later(self, delay: float, callback: Callable[[*_Ts], object],
                   *args: *_Ts, context: contextvars.Context | None = None
                   ) -> asyncio.TimerHandle:
        return self.call_at(self.time() + max(0.0, delay), callback, *args, context=context)

    def time(self) -> float:
        return self._instance.now.timestamp()

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(self, coro: Generator[Any, None, _T] | Coroutine[Any, Any, _T], *,
                    name: str | None = None, context: contextvars.Context | None = None
                    ) -> asyncio.Task[_T]:
        if isinstance(coro, collections.abc.Coroutine):
            coro = _WorkflowCoroutine(coro, self)
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        """A cancelled timer is no longer waited for (it stays in the log as created)."""

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return True

    def is_closed(self) -> bool:
        return False

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        logger.debug("workflow %s: %s", self._run_id, context.get("message"),
                     exc_info=exc)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)

    def run_ready(self) -> None:
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        try:
            ready = self._ready
            while ready:
                handle = ready.popleft()
                if not handle._cancelled:
                    try:
                        handle._run()
                    except (SystemExit, KeyboardInterrupt):
                        # raised by workflow code: its task holds it as its exception, and
                        # the run fails with it; the worker must not stop
                        pass
        finally:
            asyncio.events._set_running_loop(previous)


def _no_io(self: WorkflowLoop, *args: Any, **kwargs: Any) -> Any:
    raise WorkflowAwaitError(f"workflow {self._instance.defn.name!r} (run "
                             f"{self._instance.run_id}): workflow code cannot do I/O, "
                             f"threads or subprocesses: do them inside a @step")


for _name in ("run_in_executor", "getaddrinfo", "create_connection", "create_server",
              "subprocess_exec", "subprocess_shell", "sock_connect", "sock_recv",
              "sock_sendall"):
    setattr(WorkflowLoop, _name, _no_io)


def current_instance() -> WorkflowInstance | None:
    """The running workflow's instance, or None outside workflow code."""
    loop = asyncio.events._get_running_loop()
    if isinstance(loop, WorkflowLoop):
        return loop._instance_ref()
    return None
