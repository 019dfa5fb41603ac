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

A coroutine that cannot suspend at all (`never_suspends`: an `async def` without await,
`async for` or `async with`, such as a step that computes its result) needs no task:
`run_at_once` runs it to its end in a copy of the caller's context, and only the task
it is run for changes (`asyncio.current_task()` in it is the caller's).
"""

from __future__ import annotations

import asyncio
import contextvars
import dis
import inspect
import sys
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["never_suspends", "run_at_once", "send_then", "start_eager"]

_T = TypeVar("_T")

#: the instructions with which a coroutine's own frame can suspend (await, async for,
#: async with, and the yields they make)
_SUSPENDING = frozenset(dis.opmap[name] for name in (
    "GET_AWAITABLE", "SEND", "YIELD_VALUE", "GET_AITER", "GET_ANEXT", "BEFORE_ASYNC_WITH",
    "END_ASYNC_FOR") if name in dis.opmap)


def never_suspends(fn: Callable[..., Any]) -> bool:
    """`fn` is a plain `async def` function whose body has no point where it could
    suspend: called, its coroutine runs to its end at its first `send`."""
    if type(fn) is not types.FunctionType or not fn.__code__.co_flags & inspect.CO_COROUTINE:
        return False  # (not an `async def` of its own, e.g. a function marked as one)
    return not any(ins.opcode in _SUSPENDING for ins in dis.get_instructions(fn.__code__))


def run_at_once(coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any] | None:
    """Run `coro`, which is not to suspend (see `never_suspends`), to its end now, in a
    copy of the caller's context, without a task of its own: None once it has ended (its
    result is dropped; an error it raises is raised here). Should it suspend after all,
    it goes on as a task, which is returned (the caller owns it, as `start_eager`'s)."""
    context = contextvars.copy_context()
    try:
        yielded = context.run(coro.send, None)
    except StopIteration:
        return None
    started = _Started(coro)
    started._yielded = yielded
    return asyncio.Task(started, loop=asyncio.get_running_loop(), name=name, context=context)


@types.coroutine
def send_then(coro: Coroutine[Any, Any, _T], then: Callable[[], None]
              ) -> Generator[Any, Any, _T]:
    """Await `coro`, in the caller's task, and call `then()` once `coro` first suspends
    (or has ended, if it does not): what `then` does overlaps what `coro` waits for (an
    append whose statement is on its way while the caller does other work). An error
    from `then` is raised once `coro` has ended, unless `coro` raises one of its own."""
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        then()
        return stop.value  # type: ignore[no-any-return]
    error: BaseException | None = None
    try:
        then()
    except BaseException as exc:  # (raised after `coro`, which must not be left half-run)
        error = exc
    try:
        while True:  # the rest of `await coro`: what it yields goes to the task
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                yielded = coro.throw(exc)
            else:
                yielded = coro.send(sent)
    except StopIteration as stop:
        if error is not None:
            raise error from error.__cause__
        return stop.value  # type: ignore[no-any-return]
    finally:
        del error  # (a raised error's traceback holds this frame: no cycle)


_NOTHING: Any = object()


class _Started(Coroutine[Any, Any, Any]):
    """`coro`, run up to its first suspension by `start` (or by `run_at_once`) outside
    its task; the task's first step then gets what it suspended on (or its result, or
    its error), and every later step goes to `coro` itself."""

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


if sys.version_info >= (3, 12):

    def start_eager(coro: Coroutine[Any, Any, _T], *, name: str) -> asyncio.Task[_T]:
        """A task for `coro` whose first step has run: done already if it did not
        suspend. The caller owns it (cancels and awaits it as it would any task)."""
        return asyncio.Task(coro, loop=asyncio.get_running_loop(), name=name,
                            eager_start=True)

else:
    from asyncio.tasks import _enter_task, _leave_task

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
