"""What reaches a run's actor: a tagged union of small message types.

Step outcomes, timer firings, retry times, inbox changes and the workflow's deadline
are posted to the actor's mailbox as these, and the actor `match`es on their type.
They live in memory only (never stored), so they may carry Python objects.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from worldflow.core.events import EventRecord, StepCompleted, StepFailed, StepRetrying

__all__ = ["ChildCheck", "DeadlinePassed", "InboxChanged", "Message", "Recorded", "RetryDue",
           "StepFinished", "StepTaskFailed", "TimerDue"]


class StepFinished(msgspec.Struct, frozen=True, gc=False):
    """An attempt of the step at `cid` ended with `outcome`, at `at` (world clock)."""

    cid: str
    outcome: StepCompleted | StepFailed | StepRetrying
    at: dt.datetime


class StepTaskFailed(msgspec.Struct, frozen=True):
    """The task running an attempt of the step at `cid` failed outside the attempt
    itself (taking or giving back a queue slot in the world): the actor stops with
    `error`, and the run is replayed after a backoff, as after any crash of its actor."""

    cid: str
    error: Exception


class TimerDue(msgspec.Struct, frozen=True, gc=False):
    """The durable timer (sleep, timeout) at `cid` is due."""

    cid: str


class RetryDue(msgspec.Struct, frozen=True, gc=False):
    """The step at `cid` is due to start `attempt`."""

    cid: str
    attempt: int


class Recorded(msgspec.Struct, frozen=True, gc=False):
    """Events decided while resuming (e.g. a step whose worker died too often) to be
    written, and delivered if they complete a call."""

    records: list[EventRecord]


class InboxChanged(msgspec.Struct, frozen=True, gc=False):
    """The run's inbox has input (a hook payload, a cancel request): read it."""


class ChildCheck(msgspec.Struct, frozen=True, gc=False):
    """Look at child run `child_run_id`: create it if it is missing (the parent stopped
    between recording `child_started` and creating it), record its end if it ended."""

    child_run_id: str


class DeadlinePassed(msgspec.Struct, frozen=True, gc=False):
    """The workflow's `timeout` has passed."""


Message = (StepFinished | TimerDue | RetryDue | Recorded | InboxChanged | DeadlinePassed
           | ChildCheck | StepTaskFailed)
