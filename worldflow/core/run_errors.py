"""The exception a run's end stands for: what `Run.result()` raises for a failed or
cancelled run, and what a parent's workflow gets from such a child, rebuilt from the
stored `ErrorInfo` (its step, cause and attempts; older records by their message)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from worldflow.core.records import RunStatus
from worldflow.errors import (
    FatalError,
    FatalStepError,
    NonDeterminismError,
    RunCancelledError,
    RunFailedError,
    StepFailedError,
    WorkflowAwaitError,
    WorkflowTimeoutError,
)

if TYPE_CHECKING:
    from worldflow.core.events import ErrorInfo
    from worldflow.core.records import RunRecord

__all__ = ["run_error", "run_error_of"]

_STEP_FAILED = re.compile(r"^step '(.*)' failed after (\d+) attempt\(s\): ([\w.]+): (.*)$", re.S)


def run_error(run_id: str, status: str, error: ErrorInfo | None) -> Exception:
    """The exception `Run.result()` raises for a run that ended with `status` (failed or
    cancelled) and `error`; also what a parent's workflow gets from a child that did."""
    if status == RunStatus.CANCELLED:
        return RunCancelledError(f"run {run_id} was cancelled")
    return _error_of(run_id, error)


def run_error_of(run: RunRecord) -> Exception:
    """The exception of a failed run's record."""
    return _error_of(run.run_id, run.error)


def _error_of(run_id: str, error: ErrorInfo | None) -> Exception:
    if error is None:
        return RunFailedError(run_id, "Error", "unknown error")
    if error.type == "StepFailedError":
        if error.step_name is not None:
            return StepFailedError(error.step_name, error.cause_type or "Error",
                                   error.cause_message or "", error.traceback,
                                   error.attempts or 0)
        # stored before ErrorInfo had these fields: only the message tells them
        match = _STEP_FAILED.match(error.message)
        if match is not None:
            name, attempts, error_type, message = match.groups()
            return StepFailedError(name, error_type, message, error.traceback, int(attempts))
        return StepFailedError("?", "Error", error.message, error.traceback)
    if (error.type == "FatalError" or error.fatal) and error.step_name is not None:
        return FatalStepError(error.step_name, error.type, error.message, error.traceback,
                              error.attempts or 1)
    if error.type == "FatalError" or error.fatal:
        return FatalError(error.message, error_type=error.type, traceback=error.traceback,
                          step_name=error.step_name)
    if error.type == "NonDeterminismError":
        return NonDeterminismError(error.message)
    if error.type == "WorkflowTimeoutError":
        return WorkflowTimeoutError(error.message)
    if error.type == "WorkflowAwaitError":
        return WorkflowAwaitError(error.message)
    return RunFailedError(run_id, error.type, error.message, error.traceback)
