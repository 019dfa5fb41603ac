"""The functions users call: `start`, `get_run`, `Run`, `sleep`, `resume_hook`, and
the process default world."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import inspect
import os
import re
import uuid
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import msgspec

from worldflow.core import telemetry
from worldflow.core.decorators import direct_run
from worldflow.core.durations import parse_duration, resolve_deadline
from worldflow.core.instance import current_instance
from worldflow.core.listing import check_tags
from worldflow.core.queues import get_queue
from worldflow.core.records import NewRun, RunStatus
from worldflow.core.registry import get_workflow
from worldflow.core.run_errors import run_error_of
from worldflow.core.runtime import engine_for, get_world
from worldflow.core.serde import decode_value, encode_value
from worldflow.errors import (
    NotInWorkflowError,
    RegistrationError,
    RunCancelledError,
    RunConflictError,
    RunNotFoundError,
)

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import AsyncIterator, Awaitable, Callable

    from worldflow.core.instance import ChildCall, WorkflowInstance
    from worldflow.core.records import RunRecord, StepRecord
    from worldflow.core.registry import WorkflowDef
    from worldflow.core.world import World

__all__ = ["ChildRun", "Run", "get_run", "get_world", "resume_hook", "retry_run", "sleep", "start"]

_RUN_ID = re.compile(r"^[A-Za-z0-9_.:@\-]{1,200}$")

#: what a run's workflow returns
T = TypeVar("T")


class Run(Generic[T]):
    """A handle on one run: `run_id`, `await result()`, `await status()`,
    `await cancel()`, `stream(name)`. `start()` gives a `Run[T]` whose `result()` is
    the workflow's return type `T`; `get_run()` a `Run[Any]`."""

    __slots__ = ("run_id", "world")

    def __init__(self, run_id: str, world: World) -> None:
        self.run_id = run_id
        self.world = world

    def __repr__(self) -> str:
        return f"<Run {self.run_id}>"

    async def info(self) -> RunRecord:
        run = await self.world.get_run(self.run_id)
        if run is None:
            raise RunNotFoundError(f"run not found: {self.run_id}")
        return run

    async def status(self) -> RunStatus:
        return (await self.info()).status

    async def steps(self) -> list[StepRecord]:
        return await self.world.list_steps(self.run_id)

    async def result(self, timeout: float | None = None) -> T:
        """Wait for the run to end; return its result, or raise its error
        (`RunFailedError`, or the worldflow error the workflow raised;
        `RunCancelledError` if cancelled)."""
        if timeout is not None and (isinstance(timeout, bool)
                                    or not isinstance(timeout, int | float) or timeout < 0):
            raise TypeError(f"result(timeout=...) must be a number of seconds >= 0, "
                            f"got {timeout!r}")
        loop = asyncio.get_running_loop()
        began = loop.time()
        run = await self._ended_here(timeout)
        if run is None:
            if timeout is not None:
                timeout = max(0.0, timeout - (loop.time() - began))
            run = await self.world.wait_run_finished(self.run_id, timeout)
        while run.status == RunStatus.CONTINUED:  # follow the chain to its last run
            next_id = decode_value(run.output or msgspec.Raw(b"null"), str)
            run = await self.world.wait_run_finished(next_id, timeout)
        if run.status == RunStatus.COMPLETED:
            output = run.output or msgspec.Raw(b"null")
            defn = get_workflow(run.workflow_name)
            if defn is None:  # (not registered in this process: its plain JSON value)
                return cast("T", decode_value(output))
            try:
                return cast("T", defn.codec.decode_result(output, "workflow"))
            except TypeError as exc:
                raise TypeError(f"run {run.run_id}: {exc}") from None
        if run.status == RunStatus.CANCELLED:
            raise RunCancelledError(f"run {self.run_id} was cancelled")
        raise run_error_of(run)

    async def _ended_here(self, timeout: float | None) -> RunRecord | None:
        """The final record of a run that an actor of this process is running, handed over
        by the actor once the run's end has committed (no read-back); None if no actor
        here holds the run or it stopped without ending it (evicted to wait, lease lost):
        then the world is asked."""
        engine = engine_for(self.world)
        ended = None if engine is None else engine.local_end(self.run_id)
        if ended is None:
            return None
        if ended.done():
            return ended.result()
        if timeout is None:
            return await asyncio.shield(ended)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(ended)
        except TimeoutError:
            raise TimeoutError(f"run {self.run_id} did not finish within {timeout}s") from None

    async def cancel(self) -> bool:
        """Ask the run to stop: pending steps are cancelled and it ends `cancelled`.
        Returns False if it had already ended."""
        return await self.world.request_cancel(self.run_id)

    async def stream(self, name: str = "default", start: int = 0,
                     poll: float = 1.0) -> AsyncIterator[Any]:
        """Yield the chunks of stream `name` from index `start`, following live until
        the stream is closed (it is closed at the latest when the run ends)."""
        from worldflow.core.streams import read_stream

        async for chunk in read_stream(self.world, self.run_id, name, start, poll):
            yield chunk


async def start(fn: Callable[..., Awaitable[T]], *args: Any, world: World | None = None,
                run_id: str | None = None, dedup_key: str | None = None,
                queue: Any = None, tags: dict[str, str] | None = None,
                **kwargs: Any) -> Run[T]:
    """Start `fn` (a `@workflow`) durably with these arguments and return its `Run`.

    A `run_id` that already exists returns that run (idempotent start): one run, its
    steps run once. With `dedup_key`, while a run with the same key is live (not yet
    ended) that run is returned instead of starting another one. With `queue` (a
    `Queue` or its name) the run executes only while it holds one of the queue's slots.
    `tags` (str to str, such as ``{"customer": "42"}``) are stored with the run, shown
    on `RunRecord.tags`, and filter `list_runs(tags=...)`.
    """
    defn = getattr(fn, "__worldflow_workflow__", None)
    if defn is None:
        raise TypeError(f"start() needs a @workflow function, got {fn!r}")
    instance = current_instance()
    if instance is not None:  # inside a workflow: a durable child run
        if world is not None or dedup_key is not None or queue is not None:
            raise TypeError("start() inside a workflow starts a child run in the parent's "
                            "world; world=, dedup_key= and queue= are not taken there")
        return ChildRun(start_child(instance, defn, args, kwargs, run_id,
                                    {} if tags is None else check_tags(tags)))
    checked_tags = {} if tags is None else check_tags(tags)
    if run_id is not None:
        check_run_id(run_id)
    if dedup_key is not None and (not isinstance(dedup_key, str) or not dedup_key
                                  or len(dedup_key) > 500):
        raise ValueError(f"dedup_key must be a non-empty string of at most 500 characters, "
                         f"got {dedup_key!r:.80}")
    queue_name = "default" if queue is None else get_queue(queue).name
    check_arguments(defn.fn, defn.name, args, kwargs)
    encoded = defn.codec.encode(args, kwargs, kind="workflow")
    the_world = await get_world(world)
    now = the_world.now()
    if run_id is None:
        run_id = new_run_id(now)
    engine = engine_for(the_world)
    local = engine is not None and engine.has_capacity
    trace_context = telemetry.current_carrier() if telemetry.load() else {}
    record, created = await the_world.create_run(
        NewRun(run_id, defn.name, encoded, now, queue=queue_name,
               dedup_key=dedup_key, trace_context=trace_context, tags=checked_tags,
               # this engine runs it at once: stored started (a named queue's run
               # starts once it holds a slot)
               started=local and queue_name == "default"),
        lease_owner=engine.worker_id if engine is not None and local else None,
        lease_seconds=the_world.lease_seconds)
    if created and engine is not None and local:
        engine.dispatch(run_id, fresh=record, trace_context=trace_context)
    elif not created and record.workflow_name != defn.name:
        by = (f"dedup_key {dedup_key!r}" if record.run_id != run_id
              else f"run_id {run_id!r}")
        raise RunConflictError(
            f"start({defn.name}): {by} belongs to run {record.run_id} of workflow "
            f"{record.workflow_name!r}, not {defn.name!r}; nothing was started")
    return Run(record.run_id, the_world)


class ChildRun(Run[T]):
    """A child run started with `start()` inside a workflow: `run_id`, and
    `await result()`, a durable wait (in the parent's workflow code) for the child's
    result or error. Outside the workflow, `get_run(run_id)` gives its full `Run`."""

    __slots__ = ("_call",)

    def __init__(self, call: ChildCall) -> None:
        # workflow code does no I/O: this handle only waits, through the parent's log
        super().__init__(call.child_run_id, cast("World", None))
        self._call = call

    def __repr__(self) -> str:
        return f"<ChildRun {self.run_id}>"

    async def result(self, timeout: float | None = None) -> T:
        if timeout is not None:
            raise TypeError("a child run's result() inside a workflow takes no timeout; "
                            "use asyncio.wait_for(run.result(), ...) (a durable timer)")
        result: T = await self._call.future
        return result

    async def info(self) -> RunRecord:
        raise NotInWorkflowError(f"child run {self.run_id}: workflow code can only "
                                 f"await its result(); inspect it outside the workflow "
                                 f"with get_run({self.run_id!r})")


def start_child(instance: WorkflowInstance, defn: WorkflowDef, args: tuple[Any, ...],
                kwargs: dict[str, Any], run_id: str | None = None,
                tags: dict[str, str] | None = None) -> ChildCall:
    """Start `defn` as a child of the running workflow (see `WorkflowInstance.call_child`),
    checking first that this process knows the workflow and the arguments fit."""
    if get_workflow(defn.name) is not defn:
        raise RegistrationError(
            f"workflow {instance.defn.name!r} (run {instance.run_id}) started a child of "
            f"workflow {defn.name!r}, which is not registered in this process (or another "
            f"function took its name); import the module that defines it")
    if run_id is not None:
        check_run_id(run_id)
    check_arguments(defn.fn, defn.name, args, kwargs)
    return instance.call_child(defn, args, kwargs, run_id, tags or {})


def new_run_id(now: dt.datetime) -> str:
    """A new run's id: `run_` and 32 hex digits, the first 12 the time in milliseconds
    and the other 20 random (80 bits). Ids made one after another sort one after
    another, so a new run's rows go to the right-hand end of every index keyed by its
    id, pages that are in memory already, rather than to a random page of each."""
    return f"run_{int(now.timestamp() * 1000):012x}{os.urandom(10).hex()}"


def check_run_id(run_id: object) -> None:
    """`ValueError` unless `run_id` is a run id a user may choose."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ValueError(f"run_id must be 1-200 characters of letters, digits and . _ - : @, "
                         f"got {run_id!r:.80}")


def check_arguments(fn: Callable[..., Any], name: str, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> None:
    """`TypeError` naming the workflow if `fn` cannot be called with these arguments."""
    if not kwargs and len(args) == _plain_arity(fn):
        return  # all of a plain signature's parameters, by position
    try:
        _signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"workflow {name!r}: {exc} (its signature is "
                        f"{name}{_signature(fn)})") from None


@functools.cache
def _plain_arity(fn: Callable[..., Any]) -> int:
    """The number of parameters of `fn` if all are plain positional-or-keyword ones
    without defaults (any call with exactly that many positional arguments binds);
    -1 otherwise."""
    params = _signature(fn).parameters.values()
    if all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params):
        return len(params)
    return -1


@functools.cache
def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    try:  # annotations as types, not strings, for the error message
        return inspect.signature(fn, eval_str=True)
    except Exception:
        return inspect.signature(fn)


async def get_run(run_id: str, world: World | None = None) -> Run[Any]:
    """The `Run` of an existing run; `RunNotFoundError` if there is none."""
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"get_run(run_id=...) must be a non-empty string, got {run_id!r:.80}")
    the_world = await get_world(world)
    run = await the_world.get_run(run_id)
    if run is None:
        raise RunNotFoundError(f"run not found: {run_id}")
    return Run(run_id, the_world)


async def sleep(duration: Any) -> None:
    """Sleep durably: a number of seconds, "500ms", "30s", "5m", "1h", "2d", a
    timedelta, or an aware datetime to sleep until. The run holds no memory meanwhile
    and survives restarts."""
    instance = current_instance()
    if instance is None:
        if direct_run.get():
            import datetime as dt

            now = dt.datetime.now(dt.UTC)
            await asyncio.sleep((resolve_deadline(duration, now, what="sleep duration")
                                 - now).total_seconds())
            return
        if not isinstance(duration, _datetime_type()):
            parse_duration(duration, what="sleep duration")
        raise NotInWorkflowError("worldflow.sleep() works only inside a workflow function; "
                                 "use asyncio.sleep() elsewhere")
    resume_at = resolve_deadline(duration, instance.now, what="sleep duration")
    future = instance.loop.create_future()
    instance.create_timer(resume_at, _set_done, (future,), None)
    await future


def _datetime_type() -> type[dt.datetime]:
    import datetime as dt

    return dt.datetime


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def resume_hook(token: str, payload: Any, world: World | None = None,
                      payload_type: Any = None) -> str:
    """Deliver `payload` to the live hook `token`; returns the run id.

    `HookNotFoundError` for an unknown or disposed token; with `payload_type`, the
    payload is validated first (`msgspec.ValidationError`, nothing delivered).
    """
    if not isinstance(token, str) or not token:
        raise ValueError(f"hook token must be a non-empty string, got {token!r:.80}")
    encoded = encode_value(payload, what="hook payload")
    if payload_type is not None:
        msgspec.json.decode(encoded, type=payload_type, strict=False)
    the_world = await get_world(world)
    return await the_world.resume_hook(token, encoded)


async def retry_run(run_id: str, world: World | None = None) -> Run[Any]:
    """Start a failed (or cancelled) run again from its log, as a new run.

    The new run (id ``<run_id>-retry<N>``) gets a copy of the old log up to the first
    failed step (or up to the failure), so completed steps, sleeps and hook payloads
    are replayed, not redone; the failed step and what follows run again.
    """
    from worldflow.core.events import (
        TERMINAL_EVENTS,
        HookDisposed,
        RunCreated,
        StepCompleted,
        StepFailed,
    )
    from worldflow.errors import RunFinishedError

    the_world = await get_world(world)
    old = await the_world.get_run(run_id)
    if old is None:
        raise RunNotFoundError(f"run not found: {run_id}")
    if old.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise RunFinishedError(f"run {run_id} is {old.status.value}; only failed or "
                               f"cancelled runs can be retried")
    events = await the_world.list_events(run_id)
    cut = next((i for i, e in enumerate(events)
                if isinstance(e.event, (StepFailed, *TERMINAL_EVENTS))), len(events))
    kept = events[:cut]
    completed = {e.correlation_id for e in kept if isinstance(e.event, StepCompleted)}
    copied = [e for e in kept
              if not isinstance(e.event, RunCreated | HookDisposed)
              and not (e.event_type in ("step_started", "step_retrying")
                       and e.correlation_id not in completed)]
    n = 1
    while await the_world.get_run(f"{run_id}-retry{n}") is not None:
        n += 1
    new_id = f"{run_id}-retry{n}"
    owner = f"retry:{uuid.uuid4().hex}"
    await the_world.create_run(
        NewRun(new_id, old.workflow_name, old.input, the_world.now(), tags=old.tags),
        lease_owner=owner, lease_seconds=60.0)
    from worldflow.core.events import EventRecord

    await the_world.append_events(new_id, [
        EventRecord(new_id, seq, e.event, e.created_at) for seq, e in enumerate(copied, 1)])
    await the_world.release_run(new_id, owner, the_world.now())
    the_world.notify_work()
    return Run(new_id, the_world)
