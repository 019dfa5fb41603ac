"""Running one attempt of a step, and turning its outcome into an event."""

from __future__ import annotations

import asyncio
import datetime as dt
import traceback as _traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from worldflow.core.context import StepContext, StepMetadata, step_context
from worldflow.core.durations import resolve_deadline
from worldflow.core.events import ErrorInfo, StepCompleted, StepFailed, StepRetrying
from worldflow.core.records import step_id_for
from worldflow.core.serde import encode_value
from worldflow.errors import FatalError, RetryableError, StepTimeoutError

if TYPE_CHECKING:
    from msgspec import Raw

    from worldflow.core.context import WorkflowMetadata
    from worldflow.core.registry import StepDef
    from worldflow.core.world import World

__all__ = ["StepOutcome", "StepRunner", "run_step_attempt"]

StepOutcome = StepCompleted | StepFailed | StepRetrying
#: (step, correlation_id, attempt, input, workflow metadata, world, started_at) -> outcome
StepRunner = Callable[["StepDef", str, int, "Raw", "WorkflowMetadata", "World", dt.datetime],
                      Awaitable[StepOutcome]]


def error_info(exc: BaseException, *, fatal: bool = False) -> ErrorInfo:
    text = "".join(_traceback.format_exception(exc))
    error_type = getattr(exc, "error_type", None) if isinstance(exc, FatalError) else None
    return ErrorInfo(error_type or type(exc).__name__, str(exc), text, fatal)


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
    except asyncio.CancelledError:
        raise
    except FatalError as exc:
        return StepFailed(cid, step.name, attempt, error_info(exc, fatal=True))
    except Exception as exc:
        if isinstance(exc, step.no_retry_on) or not (
                isinstance(exc, step.retry_on) or isinstance(exc, RetryableError
                                                             | StepTimeoutError)):
            return StepFailed(cid, step.name, attempt, error_info(exc))
        if attempt > step.max_retries:
            return StepFailed(cid, step.name, attempt, error_info(exc))
        now = dt.datetime.now(dt.UTC)
        retry_at = None
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            try:
                retry_at = resolve_deadline(exc.retry_after, now, what="retry_after")
            except (TypeError, ValueError):
                retry_at = None
        if retry_at is None:
            retry_at = now + dt.timedelta(seconds=step.backoff.delay(attempt))
        return StepRetrying(cid, step.name, attempt, error_info(exc), retry_at)
    finally:
        step_context.reset(token)


async def _call(step: StepDef, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if step.is_async:
        return await step.fn(*args, **kwargs)
    return await anyio.to_thread.run_sync(lambda: step.fn(*args, **kwargs))
