"""Workflow and step definitions, by name: how a worker finds the code of a run."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from worldflow.errors import RegistrationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from worldflow.core.serde import ArgsCodec

__all__ = ["Backoff", "StepDef", "WorkflowDef", "get_step", "get_workflow", "register"]


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff between step attempts: initial * factor**(attempt-1), capped."""

    initial: float = 1.0
    factor: float = 2.0
    max: float = 60.0

    def delay(self, failed_attempt: int) -> float:
        return float(min(self.max, self.initial * self.factor ** (failed_attempt - 1)))


@dataclasses.dataclass(slots=True)
class StepDef:
    name: str
    fn: Callable[..., Any]
    codec: ArgsCodec
    is_async: bool
    max_retries: int = 3
    backoff: Backoff = dataclasses.field(default_factory=Backoff)
    timeout: float | None = None
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    no_retry_on: tuple[type[BaseException], ...] = ()
    queue: str | None = None
    #: an `async def` with no point where it could suspend (no await, async for or
    #: async with): its attempt runs to the end without an event loop turn, so it needs
    #: no task of its own (core.eager.never_suspends)
    never_suspends: bool = False


@dataclasses.dataclass(slots=True)
class WorkflowDef:
    name: str
    fn: Callable[..., Any]
    codec: ArgsCodec
    timeout: float | None = None
    #: cron of the schedule declared with `@workflow(schedule=...)` (created by workers)
    schedule: str | None = None


_workflows: dict[str, WorkflowDef] = {}
_steps: dict[str, StepDef] = {}


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    # A module run as a script and imported again defines the "same" function twice.
    ca, cb = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return a is b or (ca is not None and cb is not None and ca.co_filename == cb.co_filename
                      and a.__qualname__ == b.__qualname__)


def register(defn: WorkflowDef | StepDef) -> None:
    table: dict[str, Any] = _workflows if isinstance(defn, WorkflowDef) else _steps
    kind = "workflow" if isinstance(defn, WorkflowDef) else "step"
    existing = table.get(defn.name)
    if existing is not None and not _same_function(existing.fn, defn.fn):
        raise RegistrationError(
            f"{kind} name {defn.name!r} is already registered by "
            f"{existing.fn.__module__}.{existing.fn.__qualname__}; give "
            f"{defn.fn.__module__}.{defn.fn.__qualname__} another name with "
            f"@{kind}(name=...)")
    table[defn.name] = defn


def get_workflow(name: str) -> WorkflowDef | None:
    return _workflows.get(name)


def get_step(name: str) -> StepDef | None:
    return _steps.get(name)
