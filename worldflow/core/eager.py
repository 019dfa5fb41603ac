"""Tasks started eagerly: the coroutine runs at once, in the caller's turn of the event
loop, up to its first suspension, and only then waits as a task (what Python 3.12 calls
an eager task).

A step attempt that finishes without suspending (a computation, a cache hit, a value
already at hand) then costs no turn of the event loop, and its actor, which started it,
finds its outcome in the mailbox without going to sleep and being woken. A step that
suspends starts its I/O a turn earlier. The coroutine runs as the new task in every
respect: `asyncio.current_task()` is that task (so anyio cancel scopes, `asyncio.timeout`
and task groups entered before the first suspension belong to it) and it runs in a copy
of the caller's context, as `create_task` gives it.

Python 3.12+ does this natively (`Task(..., eager_start=True)`); on 3.11 the task is made
first, the coroutine is run up to its first suspension as that task, and the task's
first step hands the task what it suspended on (or its result).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["start_eager"]

_T = TypeVar("_T")


if sys.version_info >= (3, 12):

    def start_eager(coro: Coroutine[Any, Any, _T], *, name: str) -> asyncio.Task[_T]:
        """A task for `coro` whose first step has run: done already if it did not
        suspend. The caller owns it (cancels and awaits it as it would any task)."""
        return asyncio.Task(coro, loop=asyncio.get_running_loop(), name=name,
                            eager_start=True)

else:
    from asyncio.tasks import _enter_task, _leave_task

    _NOTHING: Any = object()

    class _Started(Coroutine[Any, Any, Any]):
        """`coro`, run up to its first suspension by `start` as its task; the task's
        first step then gets what it suspended on (or its result, or its error), and
        every later step goes to `coro` itself."""

        __slots__ = ("_coro", "_error", "_result", "_yielded")

        def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
            self._coro = coro
            self._yielded: Any = _NOTHING
            self._result: Any = _NOTHING
            self._error: BaseException | None = None

        def start(self) -> None:
            try:
                self._yielded = self._coro.send(None)
            except StopIteration as stop:
                self._result = stop.value
            except BaseException as exc:  # the task's first step raises it
                self._error = exc

        def send(self, value: Any) -> Any:
            yielded = self._yielded
            if yielded is not _NOTHING:
                self._yielded = _NOTHING
                return yielded
            result = self._result
            if result is not _NOTHING:
                self._result = _NOTHING
                raise StopIteration(result)
            error = self._error
            if error is not None:
                self._error = None
                try:
                    raise error
                finally:
                    del error  # no cycle through this frame
            return self._coro.send(value)

        def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
            # (cancelled before its first step, the coroutine gets it where it suspended,
            # as it would have inside a task)
            self._yielded = _NOTHING
            try:
                if self._result is not _NOTHING or self._error is not None:
                    self._result, self._error = _NOTHING, None
                    raise typ if val is None else val
                if val is None and tb is None:
                    return self._coro.throw(typ)
                return self._coro.throw(typ, val, tb)
            finally:
                # the error's traceback holds this frame: no cycle through its locals
                del typ, val, tb

        def close(self) -> None:
            self._coro.close()

        def __await__(self) -> Generator[Any, None, Any]:
            raise TypeError("a started task coroutine is driven by its task only")

    def start_eager(coro: Coroutine[Any, Any, _T], *, name: str) -> asyncio.Task[_T]:
        """A task for `coro` whose coroutine has run up to its first suspension (its
        task's own first step, one turn later, only hands that on). The caller owns it
        (cancels and awaits it as it would any task)."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        started = _Started(coro)
        task = asyncio.Task(started, loop=loop, name=name, context=context)
        caller = asyncio.current_task(loop)
        if caller is not None:
            _leave_task(loop, caller)
        _enter_task(loop, task)
        try:
            context.run(started.start)
        finally:
            _leave_task(loop, task)
            if caller is not None:
                _enter_task(loop, caller)
        return task
