"""`@workflow` and `@step`."""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar, overload

from worldflow.core.durations import parse_duration
from worldflow.core.eager import never_suspends
from worldflow.core.instance import current_instance
from worldflow.core.queues import get_queue
from worldflow.core.registry import Backoff, StepDef, WorkflowDef, register
from worldflow.core.serde import ArgsCodec

__all__ = ["step", "workflow"]

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
T = TypeVar("T")

#: set while a workflow function runs directly (not durably), e.g. in a unit test
direct_run: contextvars.ContextVar[bool] = contextvars.ContextVar("worldflow_direct",
                                                                  default=False)


def _check_name(name: object) -> None:
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if isinstance(name, str) and "\x00" in name:  # (no SQL text column can hold it)
        raise ValueError(f"name must not contain a NUL character (\\x00), got {name!r}")


def _backoff(value: object) -> Backoff:
    if value is None:
        return Backoff()
    if isinstance(value, Backoff):
        return value
    if isinstance(value, tuple | list) and len(value) == 3:
        initial, factor, maximum = value
        factor_ok = isinstance(factor, int | float) and not isinstance(factor, bool)
        if not factor_ok or factor < 1:
            raise ValueError(f"backoff factor must be a number >= 1, got {factor!r}")
        return Backoff(parse_duration(initial, what="backoff initial delay"), float(factor),
                       parse_duration(maximum, what="backoff max delay"))
    return Backoff(initial=parse_duration(value, what="backoff"))


def _exception_types(value: object, what: str) -> tuple[type[BaseException], ...]:
    if value is None:
        return ()
    items = value if isinstance(value, Sequence) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"{what} must be exception types, got {item!r}")
    return tuple(items)


def _call_step(defn: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The running workflow's call of step `defn` (what its wrapper awaits)."""
    instance = current_instance()
    assert instance is not None
    return instance.call_step(defn, args, kwargs)


@overload
def step(fn: F, /) -> F: ...
@overload
def step(*, name: str | None = ..., max_retries: int = ..., backoff: Any = ...,
         timeout: Any = ..., retry_on: Any = ..., no_retry_on: Any = ...,
         queue: str | None = ...) -> Callable[[F], F]: ...


def step(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
         max_retries: int = 3, backoff: Any = None, timeout: Any = None,
         retry_on: Any = None, no_retry_on: Any = None, queue: Any = None) -> Any:
    """Mark a function as a step: a unit of work whose result is recorded durably.

    Called inside a workflow, the call is recorded, run (retried per `max_retries` and
    `backoff`, each attempt cut off after `timeout`) and its result replayed from the log
    from then on. Called anywhere else it just runs, so steps are unit-testable.
    Options: `max_retries` (default 3: four attempts), `backoff` (a duration for the
    first delay, or `(initial, factor, max)`), `timeout` (a duration), `retry_on` /
    `no_retry_on` (exception types), `queue` (a `Queue` or the name of one: its
    concurrency and rate limits hold across processes), `name` (default: the
    function's name).
    """
    _check_name(name)
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    timeout_s = None if timeout is None else parse_duration(timeout, what="step timeout")
    if timeout_s is not None and timeout_s <= 0:
        raise ValueError(f"step timeout must be positive, got {timeout!r}")
    policy = _backoff(backoff)
    retry_types = _exception_types(retry_on, "retry_on") or (Exception,)
    no_retry_types = _exception_types(no_retry_on, "no_retry_on")
    queue_name = None if queue is None else get_queue(queue).name

    def decorate(func: Callable[..., Any]) -> Any:
        if not callable(func):
            raise TypeError(f"@step needs a function, got {func!r}")
        step_name = name or func.__name__
        is_async = inspect.iscoroutinefunction(func)
        defn = StepDef(step_name, func, ArgsCodec(func, step_name), is_async, max_retries,
                       policy, timeout_s, retry_types, no_retry_types, queue_name,
                       never_suspends=never_suspends(func))
        register(defn)
        if is_async:
            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if current_instance() is not None:
                    # the call is not held in a local: a step failure the workflow
                    # catches keeps this frame in its traceback, which must not hold
                    # the run's instance (a reference cycle the collector would free)
                    return await _call_step(defn, args, kwargs)
                return await func(*args, **kwargs)
            wrapper: Any = async_wrapper
        else:
            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                instance = current_instance()
                if instance is not None:  # awaited in the workflow; runs in a thread
                    return instance.call_step(defn, args, kwargs)
                if direct_run.get():  # awaited in a workflow run directly
                    return _in_thread(func, args, kwargs)
                return func(*args, **kwargs)
            wrapper = sync_wrapper
        wrapper.__dict__["__worldflow_step__"] = defn
        return wrapper

    return decorate(fn) if fn is not None else decorate


async def _in_thread(func: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
    import anyio

    return await anyio.to_thread.run_sync(lambda: func(*args, **kwargs))


# the signature is kept (`P`, and `T` the result): `start()` reads `T` off it
@overload
def workflow(fn: Callable[P, Awaitable[T]], /) -> Callable[P, Coroutine[Any, Any, T]]: ...
@overload
def workflow(*, name: str | None = ..., timeout: Any = ..., schedule: str | None = ...
             ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, T]]]: ...


def workflow(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
             timeout: Any = None, schedule: str | None = None) -> Any:
    """Mark an async function as a workflow: durable when run with `start()`.

    Its code must be deterministic: do I/O in steps, and use `worldflow.now()`,
    `random()` and `uuid4()` instead of the clock and random modules. Called directly,
    it runs in-process without durability (handy in tests).

    With `schedule` (a cron expression, UTC), each worker that starts creates or updates
    the schedule of that id (the workflow's name) that runs it without arguments at
    each tick (see `create_schedule` for other options).
    """
    _check_name(name)
    timeout_s = None if timeout is None else parse_duration(timeout, what="workflow timeout")
    if schedule is not None:
        from worldflow.core.schedules import check_cron

        check_cron(schedule)

    def decorate(func: Callable[..., Any]) -> Any:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"@workflow needs an async function, got {func!r}")
        wf_name = name or func.__name__
        defn = WorkflowDef(wf_name, func, ArgsCodec(func, wf_name), timeout_s, schedule)
        if schedule is not None:
            from worldflow.core.api import check_arguments
            from worldflow.core.schedules import check_schedule_id

            check_schedule_id(wf_name, defaulted=True)
            check_arguments(func, wf_name, (), {})  # its runs get no arguments
        register(defn)

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            instance = current_instance()
            if instance is not None:  # a durable child run of the running workflow
                from worldflow.core.api import start_child

                return await start_child(instance, defn, args, kwargs).future
            token = direct_run.set(True)
            try:
                return await func(*args, **kwargs)
            finally:
                direct_run.reset(token)

        wrapper.__dict__["__worldflow_workflow__"] = defn
        return wrapper

    return decorate(fn) if fn is not None else decorate
