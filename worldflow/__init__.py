"""worldflow: durable workflows for Python.

Write ordinary async functions marked `@workflow` and `@step`; worldflow records every
step's outcome in a storage "world" (memory, SQLite or Postgres), so a run survives
crashes, deploys and restarts, retries failed steps, sleeps for days and waits for
outside input.
"""

from __future__ import annotations

from worldflow.core.api import Run, get_run, resume_hook, retry_run, sleep, start
from worldflow.core.check import check_replay
from worldflow.core.context import (
    StepMetadata,
    WorkflowMetadata,
    get_step_metadata,
    get_workflow_metadata,
    now,
    random,
    uuid4,
)
from worldflow.core.continuation import continue_as_new
from worldflow.core.decorators import step, workflow
from worldflow.core.flow import gather
from worldflow.core.hooks import Hook, HookType, create_hook, define_hook
from worldflow.core.listing import list_runs
from worldflow.core.messages import receive, send
from worldflow.core.published import get_event, set_event
from worldflow.core.queues import Queue
from worldflow.core.records import RunStatus, StepStatus
from worldflow.core.registry import Backoff
from worldflow.core.runtime import set_default_world_factory
from worldflow.core.schedules import (
    create_schedule,
    delete_schedule,
    list_schedules,
    pause_schedule,
    resume_schedule,
)
from worldflow.core.streams import get_writable
from worldflow.core.versioning import deprecate_patch, patched
from worldflow.errors import (
    FatalError,
    FatalStepError,
    HookConflictError,
    HookNotFoundError,
    NonDeterminismError,
    NotInWorkflowError,
    RegistrationError,
    RetryableError,
    RunCancelledError,
    RunConflictError,
    RunFailedError,
    RunFinishedError,
    RunNotFoundError,
    ScheduleNotFoundError,
    StepFailedError,
    StepTimeoutError,
    WorkflowAwaitError,
    WorkflowTimeoutError,
    WorldError,
    WorldflowError,
)
from worldflow.transports.webhooks import WebhookRequest, create_webhook
from worldflow.worlds import World, create_world

# core makes the default world with the package's factory (it knows no world itself)
set_default_world_factory(create_world)

__all__ = [
    "Backoff",
    "FatalError",
    "FatalStepError",
    "Hook",
    "HookConflictError",
    "HookNotFoundError",
    "HookType",
    "NonDeterminismError",
    "NotInWorkflowError",
    "Queue",
    "RegistrationError",
    "RetryableError",
    "Run",
    "RunCancelledError",
    "RunConflictError",
    "RunFailedError",
    "RunFinishedError",
    "RunNotFoundError",
    "RunStatus",
    "ScheduleNotFoundError",
    "StepFailedError",
    "StepMetadata",
    "StepStatus",
    "StepTimeoutError",
    "WebhookRequest",
    "WorkflowAwaitError",
    "WorkflowMetadata",
    "WorkflowTimeoutError",
    "World",
    "WorldError",
    "WorldflowError",
    "check_replay",
    "continue_as_new",
    "create_hook",
    "create_schedule",
    "create_webhook",
    "create_world",
    "define_hook",
    "delete_schedule",
    "deprecate_patch",
    "gather",
    "get_event",
    "get_run",
    "get_step_metadata",
    "get_workflow_metadata",
    "get_writable",
    "list_runs",
    "list_schedules",
    "now",
    "patched",
    "pause_schedule",
    "random",
    "receive",
    "resume_hook",
    "resume_schedule",
    "retry_run",
    "send",
    "set_event",
    "sleep",
    "start",
    "step",
    "uuid4",
    "workflow",
]
