"""Running one attempt of a step, and turning its outcome into an event."""

from __future__ import annotations

import asyncio
import datetime as dt
import traceback as _traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from worldflow.core import telemetry
from worldflow.core.context import StepContext, StepMetadata, step_context
from worldflow.core.durations import resolve_deadline
from worldflow.core.events import ErrorInfo, StepCompleted, StepFailed, StepRetrying
from worldflow.core.records import step_id_for
from worldflow.core.serde import encode_value
from worldflow.errors import FatalError, RetryableError, StepFailedError, StepTimeoutError

if TYPE_CHECKING:
    from msgspec import Raw

    from worldflow.core.context import WorkflowMetadata
    from worldflow.core.registry import StepDef
    from worldflow.core.world import World

__all__ = ["StepOutcome", "StepRunner", "base_exception_info", "error_info",
           "run_step_attempt"]

StepOutcome = StepCompleted | StepFailed | StepRetrying
#: (step, correlation_id, attempt, input, workflow metadata, world, started_at) -> outcome
StepRunner = Callable[["StepDef", str, int, "Raw", "WorkflowMetadata", "World", dt.datetime],
                      Awaitable[StepOutcome]]


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ fails must not stop the engine
        return f"<{type(exc).__name__}: its message cannot be shown>"


class _RecurringStack(_traceback.StackSummary):
    """A stack that formats each frame through a cache: a failing step or workflow fails
    at the same lines run after run, and formatting a frame (on Python 3.11+, parsing
    its source line to place the carets under the failing expression) is most of what
    recording a failure costs."""

    def format_frame_summary(self, frame_summary: _traceback.FrameSummary,
                             **options: Any) -> str:
        # (options: Python 3.13's `colorize`, which stored text never asks for)
        if frame_summary.locals or options.get("colorize"):  # not cached
            return super().format_frame_summary(frame_summary, **options)
        key = (frame_summary.filename, frame_summary.lineno, frame_summary.name,
               frame_summary.line, getattr(frame_summary, "end_lineno", None),
               getattr(frame_summary, "colno", None),
               getattr(frame_summary, "end_colno", None))
        text = _FORMATTED_FRAMES.get(key)
        if text is None:
            text = super().format_frame_summary(frame_summary, **options)
            if len(_FORMATTED_FRAMES) >= _MAX_FORMATTED_FRAMES:
                _FORMATTED_FRAMES.clear()
            _FORMATTED_FRAMES[key] = text
        return text


#: formatted frames by where they are (file, line, function, source, positions)
_FORMATTED_FRAMES: dict[tuple[object, ...], str] = {}
_MAX_FORMATTED_FRAMES = 4096


def _recurring_stacks(te: _traceback.TracebackException) -> None:
    """Give `te` and the exceptions chained to it (cause, context, group members) the
    cached frame formatting."""
    todo, seen = [te], set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.stack = _RecurringStack(current.stack)
        todo.extend(t for t in (current.__cause__, current.__context__) if t is not None)
        todo.extend(getattr(current, "exceptions", None) or ())


def _traceback_text(exc: BaseException) -> str | None:
    try:
        te = _traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
        _recurring_stacks(te)
        return "".join(te.format())
    except Exception:
        return None


def error_info(exc: BaseException, *, fatal: bool = False) -> ErrorInfo:
    """`exc` as stored in the log. A `StepFailedError` or a step's `FatalError` keeps
    its step (and attempts, and original error) as fields, not only as text."""
    if isinstance(exc, StepFailedError) and not isinstance(exc, FatalError):
        return ErrorInfo("StepFailedError", _text(exc), _traceback_text(exc), fatal,
                         step_name=exc.step_name, attempts=exc.attempts,
                         cause_type=exc.error_type, cause_message=exc.message)
    if isinstance(exc, FatalError):
        return ErrorInfo(exc.error_type or type(exc).__name__, _text(exc),
                         _traceback_text(exc), fatal, step_name=exc.step_name)
    return ErrorInfo(type(exc).__name__, _text(exc), _traceback_text(exc), fatal)


def base_exception_info(exc: BaseException, where: str, *, fatal: bool = False) -> ErrorInfo:
    """A `BaseException` that is not an `Exception` (SystemExit, KeyboardInterrupt,
    GeneratorExit) raised by user code: it fails `where` ("step 'x'", "workflow 'y'"),
    never the worker that ran it."""
    return ErrorInfo(type(exc).__name__, f"{where} raised {exc!r}: a BaseException in "
                     f"workflow or step code fails the run (it does not stop the worker)",
                     _traceback_text(exc), fatal)


async def run_step_attempt(step: StepDef, cid: str, attempt: int, input: Raw,
                           workflow: WorkflowMetadata, world: World,
                           started_at: dt.datetime) -> StepOutcome:
    """Run the step body once; never raises except on cancellation."""
    metadata = StepMetadata(step_id_for(workflow.run_id, cid), step.name, attempt, started_at,
                            workflow.run_id, workflow.workflow_name)
    token = step_context.set(StepContext(metadata, workflow, world))
    try:
        args, kwargs = step.codec.decode(input)
        if step.timeout is not None:
            try:
                with anyio.fail_after(step.timeout):
                    result = await _call(step, args, kwargs)
            except TimeoutError:
                raise StepTimeoutError(
                    f"step {step.name!r} attempt {attempt} timed out after "
                    f"{step.timeout:g}s") from None
        else:
            result = await _call(step, args, kwargs)
        try:
            output = encode_value(result, what=f"step {step.name!r}: its result")
        except TypeError as exc:
            return StepFailed(cid, step.name, attempt, error_info(exc, fatal=True))
        return StepCompleted(cid, step.name, attempt, output)
    except asyncio.CancelledError as exc:
        if _being_cancelled():
            raise  # the attempt is cancelled (its run's cancel, its actor stopping)
        # raised by the step's own code, the attempt not cancelled (e.g. a library's
        # CancelledError let out): the attempt fails, rather than end with no outcome
        if telemetry.active:
            telemetry.record_exception(exc)
        return StepFailed(cid, step.name, attempt, ErrorInfo(
            "CancelledError", f"step {step.name!r} raised CancelledError without being "
            f"cancelled: the attempt failed (a CancelledError is not retried)",
            _traceback_text(exc), True))
    except FatalError as exc:
        if telemetry.active:
            telemetry.record_exception(exc)
        return StepFailed(cid, step.name, attempt, error_info(exc, fatal=True))
    except Exception as exc:
        if telemetry.active:
            telemetry.record_exception(exc)
        if isinstance(exc, step.no_retry_on) or not (
                isinstance(exc, step.retry_on) or isinstance(exc, RetryableError
                                                             | StepTimeoutError)):
            return StepFailed(cid, step.name, attempt, error_info(exc))
        if attempt > step.max_retries:
            return StepFailed(cid, step.name, attempt, error_info(exc))
        info = error_info(exc)
        now = world.now()  # last: the actor counts the delay from when this returns
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            try:  # checked when the RetryableError was made; unless changed since
                retry_at = resolve_deadline(exc.retry_after, now,
                                            what=f"step {step.name!r}: retry_after")
            except (TypeError, ValueError) as bad:
                return StepFailed(cid, step.name, attempt, error_info(bad, fatal=True))
        else:
            retry_at = now + dt.timedelta(seconds=step.backoff.delay(attempt))
        return StepRetrying(cid, step.name, attempt, info, retry_at)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit
        if telemetry.active:
            telemetry.record_exception(exc)
        return StepFailed(cid, step.name, attempt, base_exception_info(
            exc, f"step {step.name!r}", fatal=True))
    finally:
        step_context.reset(token)


def _being_cancelled() -> bool:
    """The current task has been asked to stop (a function of its own, so that the
    attempt's frame, which a CancelledError's traceback keeps, holds no task)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def _call(step: StepDef, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if step.is_async:
        return await step.fn(*args, **kwargs)
    return await anyio.to_thread.run_sync(lambda: step.fn(*args, **kwargs))
