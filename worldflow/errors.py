"""Errors raised by worldflow.

All of them derive from one base::

    WorldflowError
    ├── FatalError              a step failed and must not be retried
    │   └── FatalStepError      (also a StepFailedError) what the workflow sees when a
    │                           step raised FatalError
    ├── RetryableError          a step failed; retry it after `retry_after`
    ├── StepFailedError         a step failed for good: retries exhausted, or fatal
    │   └── FatalStepError
    ├── StepTimeoutError        a step attempt ran past its timeout
    ├── WorkflowTimeoutError    a run ran past its workflow's timeout
    ├── NonDeterminismError     workflow code no longer matches its event log
    ├── RunFailedError          a run ended `failed` (raised by `Run.result()`)
    ├── RunCancelledError       a run ended `cancelled` (raised by `Run.result()`)
    ├── RunNotFoundError        no run with that id
    ├── RunFinishedError        the run has already ended; it takes no more input
    ├── HookNotFoundError       unknown or disposed hook token
    ├── HookConflictError       a hook token is already in use by a live run
    ├── ScheduleNotFoundError   no schedule with that id
    ├── NotInWorkflowError      a workflow-only function was called outside a workflow
    ├── WorkflowAwaitError      workflow code awaited something worldflow cannot deliver
    ├── RegistrationError       a workflow or step name was registered twice
    ├── LeaseLostError          another worker took over the run (internal)
    └── WorldError              the storage world failed (bad file, unreachable server)
        ├── SchemaError         the database schema is not one this version can use
        └── CorruptRecordError  a stored event or row cannot be decoded

In workflow code, ``except StepFailedError`` catches every failure of a step call
(retries exhausted, a `FatalError`, a result that cannot be stored); ``except
FatalError`` catches only the fatal ones.
"""

from __future__ import annotations

import datetime as _dt

from worldflow.core.durations import resolve_deadline

#: any aware time: RetryableError checks that `retry_after` resolves, not when to
_EPOCH = _dt.datetime(2000, 1, 1, tzinfo=_dt.UTC)

__all__ = [
    "CorruptRecordError",
    "FatalError",
    "FatalStepError",
    "HookConflictError",
    "HookNotFoundError",
    "LeaseLostError",
    "NonDeterminismError",
    "NotInWorkflowError",
    "RegistrationError",
    "RetryableError",
    "RunCancelledError",
    "RunFailedError",
    "RunFinishedError",
    "RunNotFoundError",
    "ScheduleNotFoundError",
    "SchemaError",
    "StepFailedError",
    "StepTimeoutError",
    "WorkflowAwaitError",
    "WorkflowTimeoutError",
    "WorldError",
    "WorldflowError",
]


class WorldflowError(Exception):
    """Base class of every error worldflow raises."""


class FatalError(WorldflowError):
    """Raise in a step to fail it at once, without retries.

    Inside the workflow the step call raises a `FatalError` with the same message;
    `error_type` and `traceback` describe where it was raised.
    """

    def __init__(self, message: str = "", *, error_type: str | None = None,
                 traceback: str | None = None, step_name: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type or type(self).__name__
        self.traceback = traceback
        self.step_name = step_name


class RetryableError(WorldflowError):
    """Raise in a step to retry it after `retry_after` (a duration; default: the backoff)."""

    def __init__(self, message: str = "",
                 retry_after: float | str | _dt.timedelta | _dt.datetime | None = None) -> None:
        if retry_after is not None:  # a bad value fails here, where it was written
            resolve_deadline(retry_after, _EPOCH, what="RetryableError(retry_after=...)")
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class StepFailedError(WorldflowError):
    """A step failed for good: its retries are exhausted, or it failed fatally (then
    the error is a `FatalStepError`, which is also a `FatalError`).

    Carries the original error's type name, message and traceback text.
    """

    def __init__(self, step_name: str, error_type: str, message: str,
                 traceback: str | None = None, attempts: int = 0) -> None:
        super().__init__(f"step {step_name!r} failed after {attempts} attempt(s): "
                         f"{error_type}: {message}")
        self.step_name = step_name
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        self.attempts = attempts


class FatalStepError(StepFailedError, FatalError):  # type: ignore[misc]
    """A step failed with `FatalError` (or another error that is never retried, such
    as a result that cannot be stored): what the workflow sees at the step's call.

    It is both a `StepFailedError` (so ``except StepFailedError`` catches any step
    failure) and a `FatalError` (``except FatalError`` catches it as before). Its
    `message` (and ``str()``) is the step's own message; `error_type` the original
    error's type name.
    """

    def __init__(self, step_name: str, error_type: str, message: str,
                 traceback: str | None = None, attempts: int = 1) -> None:
        WorldflowError.__init__(self, message)
        self.step_name = step_name
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        self.attempts = attempts


class StepTimeoutError(WorldflowError):
    """A step attempt ran past its `timeout` and was cancelled."""


class WorkflowTimeoutError(WorldflowError):
    """The run ran past its workflow's `timeout`; it ended `failed`."""


class NonDeterminismError(WorldflowError):
    """The workflow's code issued a call that its recorded event log does not match.

    This happens when workflow code changes under a run that is still going: the
    message names the step (or wait) and its position in the workflow's program order.
    Where known, the parts are also attributes: `workflow`, `run_id`, `position`,
    `expected` (what the log records there) and `found` (what the code does there).
    """

    def __init__(self, message: str, *, workflow: str | None = None,
                 run_id: str | None = None, position: str | None = None,
                 expected: str | None = None, found: str | None = None) -> None:
        super().__init__(message)
        self.workflow = workflow
        self.run_id = run_id
        self.position = position
        self.expected = expected
        self.found = found


class RunFailedError(WorldflowError):
    """The run ended `failed`; `error_type`, `message` and `traceback` describe why."""

    def __init__(self, run_id: str, error_type: str, message: str,
                 traceback: str | None = None) -> None:
        super().__init__(f"run {run_id} failed: {error_type}: {message}")
        self.run_id = run_id
        self.error_type = error_type
        self.message = message
        self.traceback = traceback


class RunCancelledError(WorldflowError):
    """The run was cancelled."""


class RunNotFoundError(WorldflowError, LookupError):
    """No run has this id."""


class RunFinishedError(WorldflowError):
    """The run has already ended, so it takes no more input (hook payloads, cancels)."""


class RunConflictError(WorldflowError, ValueError):
    """`start()` with a `run_id` (or `dedup_key`) that belongs to a run of another
    workflow."""


class HookNotFoundError(WorldflowError, LookupError):
    """No live hook has this token: it never existed or was disposed when its run ended."""


class HookConflictError(WorldflowError):
    """A hook token is already used by another live hook."""


class ScheduleNotFoundError(WorldflowError, LookupError):
    """No schedule has this id (`pause_schedule`, `resume_schedule`, `delete_schedule`)."""


class NotInWorkflowError(WorldflowError, RuntimeError):
    """A function that only works inside a running workflow was called outside one."""


class WorkflowAwaitError(WorldflowError, RuntimeError):
    """Workflow code awaited something that worldflow cannot deliver.

    A workflow may only wait for steps, sleeps, hooks, messages and child runs: they
    are recorded and replayed. A future of another event loop (a database driver's or
    HTTP client's call awaited in workflow code) raises this at the await; a wait on
    something nothing can ever complete (an `asyncio.Event`, `Queue` or bare future
    while no step, timer or hook is pending) fails the run with it, and so do threads,
    sockets and subprocesses started from workflow code. Do I/O in a @step.
    """


class RegistrationError(WorldflowError, ValueError):
    """Two different functions were registered under one workflow or step name."""


class LeaseLostError(WorldflowError):
    """This worker no longer holds the run: another worker took it over."""


class WorldError(WorldflowError):
    """The storage world failed: a file that is not a worldflow database, a server that
    cannot be reached, a query that failed."""


class CorruptRecordError(WorldError):
    """A stored record of run `run_id` cannot be decoded: its event at `seq`, or (with
    `seq` -1) its row in the runs, steps or hooks table."""

    def __init__(self, message: str, run_id: str, seq: int = -1) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.seq = seq


class SchemaError(WorldError):
    """The database's schema is not one this version of worldflow can use."""
