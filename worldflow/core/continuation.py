"""Continue-as-new: a workflow that would run forever ends its run and starts a fresh
one of the same workflow (an empty log), so replay cost stays flat.

The next run's id is derived from the chain's first: ``"{first}~c1"``, ``"{first}~c2"``,
...; so a replay of the ending run creates the same next run (idempotent by id), and
`continued_from` is known from the id alone. ``~`` is refused in run ids given to
`start()`, so a derived id never collides with (or is misread as) a user's id.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, NoReturn

from worldflow.core.instance import current_instance
from worldflow.errors import NotInWorkflowError

if TYPE_CHECKING:
    import asyncio

__all__ = ["ContinueAsNew", "continuation_of", "continue_as_new", "next_run_id",
           "previous_run_id"]

_CONTINUED = re.compile(r"^(.*)~c(\d+)$", re.S)


class ContinueAsNew(BaseException):
    """Raised by `continue_as_new` to end the workflow; not an `Exception`, so that an
    `except Exception:` in workflow code does not stop it."""

    def __init__(self, input: Any) -> None:
        super().__init__("continue_as_new")
        self.input = input


def continuation_of(root: asyncio.Future[Any]) -> ContinueAsNew | None:
    """The `ContinueAsNew` a finished workflow task ended with; None if it ended
    otherwise (returned, raised, or was cancelled)."""
    if root.cancelled():
        return None
    error = root.exception()
    return error if isinstance(error, ContinueAsNew) else None


def continue_as_new(*args: Any, **kwargs: Any) -> NoReturn:
    """End this run (status ``continued``) and start a fresh run of the same workflow
    with these arguments; `run.result()` on any run of the chain follows it to the
    final result. Only inside a workflow."""
    from worldflow.core.api import check_arguments

    instance = current_instance()
    if instance is None:
        raise NotInWorkflowError("worldflow.continue_as_new() works only inside a "
                                 "workflow function")
    check_arguments(instance.defn.fn, instance.defn.name, args, kwargs)
    raise ContinueAsNew(instance.defn.codec.encode(args, kwargs, kind="workflow"))


def next_run_id(run_id: str) -> str:
    match = _CONTINUED.match(run_id)
    if match is None:
        return f"{run_id}~c1"
    return f"{match.group(1)}~c{int(match.group(2)) + 1}"


def previous_run_id(run_id: str) -> str | None:
    match = _CONTINUED.match(run_id)
    if match is None:
        return None
    n = int(match.group(2))
    return match.group(1) if n == 1 else f"{match.group(1)}~c{n - 1}"
