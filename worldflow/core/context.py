"""What code can ask about where it runs: `get_step_metadata()`, `get_workflow_metadata()`,
and the determinism helpers `now()`, `random()`, `uuid4()`."""

from __future__ import annotations

import contextvars
import datetime as dt
import uuid as _uuid
from typing import TYPE_CHECKING

import msgspec

from worldflow.core.instance import current_instance
from worldflow.errors import NotInWorkflowError

if TYPE_CHECKING:
    from worldflow.core.world import World

__all__ = ["StepMetadata", "WorkflowMetadata", "get_step_metadata", "get_workflow_metadata",
           "now", "random", "uuid4"]


class WorkflowMetadata(msgspec.Struct, frozen=True, gc=False):
    run_id: str
    workflow_name: str
    started_at: dt.datetime
    #: the run whose workflow started this one as a child (None at top level)
    parent_run_id: str | None = None
    #: the run that ended with `continue_as_new` to start this one (None: the first)
    continued_from: str | None = None
    #: the tick of the schedule that started this run (None: not started by a schedule)
    scheduled_at: dt.datetime | None = None


class StepMetadata(msgspec.Struct, frozen=True, gc=False):
    """`step_id` is the same for every attempt of one step call: use it as an
    idempotency key towards other systems."""

    step_id: str
    step_name: str
    attempt: int
    started_at: dt.datetime
    run_id: str
    workflow_name: str


class StepContext:
    __slots__ = ("metadata", "workflow", "world")

    def __init__(self, metadata: StepMetadata, workflow: WorkflowMetadata,
                 world: World) -> None:
        self.metadata = metadata
        self.workflow = workflow
        self.world = world


step_context: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "worldflow_step", default=None)


def get_step_metadata() -> StepMetadata:
    """The running step's id (stable across retries), name and attempt (1-based).

    A step called directly (not by a durable run, e.g. in a unit test) gets metadata of
    its own: a fresh `local:` step id and attempt 1.
    """
    ctx = step_context.get()
    if ctx is None:
        if current_instance() is not None:
            raise NotInWorkflowError("get_step_metadata() works inside steps, not in "
                                     "workflow code")
        local = f"local:{_uuid.uuid4().hex}"
        return StepMetadata(local, "", 1, dt.datetime.now(dt.UTC), local, "")
    return ctx.metadata


def get_workflow_metadata() -> WorkflowMetadata:
    """The run id, workflow name and start time of the workflow running this code
    (works in workflow code and in its steps)."""
    instance = current_instance()
    if instance is not None:
        from worldflow.core.continuation import previous_run_id
        from worldflow.core.schedules import scheduled_at_of

        return WorkflowMetadata(instance.run_id, instance.defn.name, instance.started_at,
                                instance.parent_run_id, previous_run_id(instance.run_id),
                                scheduled_at_of(instance.run_id))
    ctx = step_context.get()
    if ctx is not None:
        if ctx.workflow.scheduled_at is None:
            from worldflow.core.schedules import scheduled_at_of

            scheduled_at = scheduled_at_of(ctx.workflow.run_id)
            if scheduled_at is not None:
                return msgspec.structs.replace(ctx.workflow, scheduled_at=scheduled_at)
        return ctx.workflow
    raise NotInWorkflowError("get_workflow_metadata() works only inside a workflow or "
                             "its steps")


def now() -> dt.datetime:
    """The workflow's clock: the time of the last event it saw. The same on replay.
    Outside a workflow, the current UTC time."""
    instance = current_instance()
    if instance is None:
        return dt.datetime.now(dt.UTC)
    return instance.now


def random() -> float:
    """A random float in [0, 1): seeded by the run, so the same sequence on replay."""
    instance = current_instance()
    if instance is None:
        import random as _random

        return _random.random()
    return instance.random.random()


def uuid4() -> _uuid.UUID:
    """A random UUID that is the same on replay."""
    instance = current_instance()
    if instance is None:
        return _uuid.uuid4()
    return _uuid.UUID(int=instance.random.getrandbits(128), version=4)
