"""Changing workflow code under running runs: `patched()` and `deprecate_patch()`.

A run is replayed by whatever code the worker runs now, so code that changes what a
workflow calls must still replay the runs that went past that point under the old
code. `patched("change-id")` tells the two apart, as Temporal's `workflow.patched`:

- a run that reaches the call under the new code (a new run, or a replay that is past
  the end of its log) gets True, and the first True is recorded as a `patch_marker`
  event in its log;
- a replay of a run whose log holds the marker gets True again;
- a replay of a run whose log holds something else at this point (a step, sleep, ...
  recorded by the old code: the log goes on past this position) gets False.

The answer is remembered for the run: asking again gives the same answer and records
nothing more. Once no run that took the old branch is left, the old branch can go:
`deprecate_patch("change-id")` keeps replays of runs that recorded the marker working
(their marker is tolerated) and records nothing. When every such run has ended, the
call can go too; a marker in a log that the code no longer asks about (a patch removed
without `deprecate_patch`) is a `NonDeterminismError` naming it.

Markers take no position in the program order, so adding or removing `patched()` and
`deprecate_patch()` never shifts the positions of the calls around them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worldflow.core.decorators import direct_run
from worldflow.core.events import PatchMarker
from worldflow.core.instance import current_instance
from worldflow.errors import NonDeterminismError, NotInWorkflowError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from worldflow.core.events import EventRecord
    from worldflow.core.instance import WorkflowInstance

__all__ = ["deprecate_patch", "patched"]


def patched(change_id: str) -> bool:
    """True if this run takes the new code's branch at this point, False if it is a
    replay of a run that passed this point under the code before the change.

    Use it around a change to what the workflow calls (steps, sleeps, hooks, children)::

        if patched("send-receipt"):
            await send_receipt(order)     # the new code
        else:
            await email_customer(order)   # what running runs did

    Works only in workflow code (`NotInWorkflowError` elsewhere); in a workflow called
    directly (without `start`, as in a unit test) it is True.
    """
    instance = _instance("patched", change_id)
    if instance is None:
        return True  # a workflow called directly (a test) runs the new code
    answer = instance.patches.get(change_id)
    if answer is not None:
        return answer
    position = instance._next_cid
    if change_id in instance.recorded_patches:
        answer = True  # the run took the new branch when it first got here
    else:
        # False if the log holds a call at this position or later (the run got past
        # this point without asking: it ran the old code here); True past its end
        answer = position > instance.log_last_position
        if answer:
            instance.new_patch_markers.append((change_id, position))
    instance.patches[change_id] = answer
    return answer


def deprecate_patch(change_id: str) -> None:
    """Mark `patched(change_id)` as gone: its old branch was removed because no run that
    took it is left. Records nothing; a replay tolerates the run's recorded marker.

    Works only in workflow code (`NotInWorkflowError` elsewhere).
    """
    instance = _instance("deprecate_patch", change_id)
    if instance is not None:
        instance.patches.setdefault(change_id, True)


def _instance(function: str, change_id: object) -> WorkflowInstance | None:
    """The running workflow's instance (None: a workflow called directly, not durably)."""
    instance = current_instance()
    if instance is None and not direct_run.get():
        raise NotInWorkflowError(f"{function}() works only in workflow code (a @workflow "
                                 f"function), not in steps or outside a workflow")
    if not isinstance(change_id, str) or not change_id.strip():
        raise TypeError(f"{function}(change_id) needs a non-empty string naming the "
                        f"change, got {change_id!r}")
    return instance


def read_log(instance: WorkflowInstance, events: Iterable[EventRecord]) -> None:
    """Tell `instance` what versioning needs of its run's log before its code starts:
    the change ids whose markers it holds and the last position it records a call at."""
    last = 0
    for record in events:
        event = record.event
        if isinstance(event, PatchMarker):
            instance.recorded_patches.add(event.change_id)
            continue
        cid = getattr(event, "correlation_id", None)
        if cid is not None and cid.isdigit():
            last = max(last, int(cid))
    instance.log_last_position = last


def check_marker(instance: WorkflowInstance, marker: PatchMarker) -> None:
    """On replay, at a recorded marker: the code must have asked about that change by
    now (`patched` or `deprecate_patch`); otherwise the patch was removed too soon."""
    if marker.change_id in instance.patches:
        return
    expected = f"patched({marker.change_id!r})"
    raise NonDeterminismError(
        f"workflow {instance.defn.name!r} (run {instance.run_id}): the log records "
        f"{expected} answered True before position {marker.position}, but the workflow "
        f"code no longer calls patched({marker.change_id!r}) or "
        f"deprecate_patch({marker.change_id!r}) there; keep deprecate_patch"
        f"({marker.change_id!r}) until the runs that recorded it have ended",
        workflow=instance.defn.name, run_id=instance.run_id,
        position=str(marker.position), expected=expected, found="no call")


def take_new_markers(instance: WorkflowInstance) -> list[PatchMarker]:
    """The markers of `patched()` calls that answered True for the first time."""
    markers = [PatchMarker(change_id, position)
               for change_id, position in instance.new_patch_markers]
    instance.new_patch_markers = []
    return markers
