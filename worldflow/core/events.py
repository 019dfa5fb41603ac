"""The event log's vocabulary: one tagged union of frozen msgspec Structs.

Every change to a run is an event appended to its log; the runs, steps and hooks
tables are projections of these events. Stored events never change shape: a new
field gets a default, and a tag is never renamed (schema evolution, msgspec style).
Values the user's code produced (inputs, outputs, payloads) are kept as
`msgspec.Raw` JSON so that they are decoded only where they are used.
"""

from __future__ import annotations

import datetime as dt

import msgspec
from msgspec import Raw

from worldflow.errors import CorruptRecordError

__all__ = [
    "NO_METADATA",
    "CancelRequested",
    "ChildEnded",
    "ChildStarted",
    "ErrorInfo",
    "Event",
    "EventRecord",
    "HookCreated",
    "HookDisposed",
    "HookReceived",
    "HookRejected",
    "MessageReceived",
    "MessageWaiting",
    "PatchMarker",
    "RunCancelled",
    "RunCompleted",
    "RunContinued",
    "RunCreated",
    "RunFailed",
    "RunStarted",
    "StepCompleted",
    "StepFailed",
    "StepRetrying",
    "StepStarted",
    "ValuePublished",
    "WaitCompleted",
    "WaitCreated",
    "decode_event",
    "encode_event",
    "run_outcome",
]


class ErrorInfo(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """An error as stored: its type name, message and traceback text.

    A step's error that failed the run also names the step (`step_name`), how many
    attempts it made (`attempts`) and the original error (`cause_type`,
    `cause_message`), so that `Run.result()` raises the same `StepFailedError` the
    workflow saw. Those fields are absent from records written before they existed.
    """

    type: str
    message: str
    traceback: str | None = None
    fatal: bool = False
    step_name: str | None = None
    attempts: int | None = None
    cause_type: str | None = None
    cause_message: str | None = None


#: the `metadata` of a hook that has none
NO_METADATA = Raw(b"null")


class _Event(msgspec.Struct, frozen=True, gc=False, tag_field="type", omit_defaults=True):
    pass


class RunCreated(_Event, tag="run_created", frozen=True):
    workflow_name: str
    input: Raw
    #: the `start()` caller's trace context (W3C traceparent/tracestate headers), which
    #: every process that runs the run continues; empty without OpenTelemetry
    trace_context: dict[str, str] = {}


class RunStarted(_Event, tag="run_started", frozen=True):
    pass


class StepStarted(_Event, tag="step_started", frozen=True):
    correlation_id: str
    step_name: str
    attempt: int
    input: Raw = Raw(b"null")


class StepCompleted(_Event, tag="step_completed", frozen=True):
    correlation_id: str
    step_name: str
    attempt: int
    output: Raw


class StepFailed(_Event, tag="step_failed", frozen=True):
    correlation_id: str
    step_name: str
    attempt: int
    error: ErrorInfo


class StepRetrying(_Event, tag="step_retrying", frozen=True):
    correlation_id: str
    step_name: str
    attempt: int  # the attempt that failed
    error: ErrorInfo
    retry_at: dt.datetime


class WaitCreated(_Event, tag="wait_created", frozen=True):
    correlation_id: str
    resume_at: dt.datetime


class WaitCompleted(_Event, tag="wait_completed", frozen=True):
    correlation_id: str


class HookCreated(_Event, tag="hook_created", frozen=True):
    correlation_id: str
    token: str
    #: JSON recorded with the hook by an extension (a webhook's response); `NO_METADATA`
    #: (JSON null) when there is none (`Raw | None` cannot be decoded by msgspec)
    metadata: Raw = Raw(b"null")


class HookReceived(_Event, tag="hook_received", frozen=True):
    correlation_id: str
    token: str
    payload: Raw


class HookRejected(_Event, tag="hook_rejected", frozen=True):
    """A payload for a typed hook that does not validate as the hook's type: kept in
    the log (to show what was sent and why it was refused), never delivered; the
    workflow goes on waiting for a payload that validates."""

    correlation_id: str
    token: str
    payload: Raw
    reason: str


class HookDisposed(_Event, tag="hook_disposed", frozen=True):
    correlation_id: str
    token: str


class MessageReceived(_Event, tag="message_received", frozen=True):
    """A message sent to the run with `send(run_id, message, topic)`, taken from its
    inbox into the log; `receive(topic)` in the workflow gets it (arrival order)."""

    topic: str
    payload: Raw


class ChildStarted(_Event, tag="child_started", frozen=True):
    """The workflow started run `child_run_id` (of `workflow_name`) as its child at
    position `correlation_id`; recorded before the child is created, so that a replay
    finds the same child and never creates a second one."""

    correlation_id: str
    child_run_id: str
    workflow_name: str


class ChildEnded(_Event, tag="child_ended", frozen=True):
    """The child run at `correlation_id` ended with `status` (completed, failed or
    cancelled), and its output or error, as the parent's workflow receives it."""

    correlation_id: str
    child_run_id: str
    status: str
    output: Raw = Raw(b"null")
    error: ErrorInfo | None = None


class CancelRequested(_Event, tag="cancel_requested", frozen=True):
    """`run.cancel()` reached the workflow: `asyncio.CancelledError` is raised at its
    current await (and its running step attempts are cancelled). The run ends
    `cancelled` when that error leaves the workflow."""


class ValuePublished(_Event, tag="value_published", frozen=True):
    """`set_event(key, value)` in the workflow; `get_event(run_id, key)` reads the last."""

    correlation_id: str
    key: str
    value: Raw


class PatchMarker(_Event, tag="patch_marker", frozen=True):
    """`patched(change_id)` answered True for the first time in this run: the run took
    the new code's branch. Replays answer True again; a replay of a run whose log has
    no marker where the code asks answers False (the run passed that point under the
    old code). `position` is the program-order position the next call got."""

    change_id: str
    position: int = 0


class MessageWaiting(_Event, tag="message_waiting", frozen=True):
    """A note, not a call: the run was set aside while `receive()` waited on `topics`
    (recorded so that a reader of the log can say what the run waits for). It takes no
    position in the program order and replay passes over it."""

    topics: list[str]


class RunCompleted(_Event, tag="run_completed", frozen=True):
    output: Raw


class RunFailed(_Event, tag="run_failed", frozen=True):
    error: ErrorInfo


class RunCancelled(_Event, tag="run_cancelled", frozen=True):
    reason: str | None = None


class RunContinued(_Event, tag="run_continued", frozen=True):
    """`continue_as_new(...)`: the run ended and `next_run_id` (created first) goes on
    with a fresh log."""

    next_run_id: str


Event = (RunCreated | RunStarted | StepStarted | StepCompleted | StepFailed | StepRetrying
         | WaitCreated | WaitCompleted | HookCreated | HookReceived | HookRejected
         | HookDisposed
         | MessageReceived | ChildStarted | ChildEnded | CancelRequested | ValuePublished
         | PatchMarker | MessageWaiting | RunCompleted | RunFailed | RunCancelled | RunContinued)

TERMINAL_EVENTS = (RunCompleted, RunFailed, RunCancelled, RunContinued)


def run_outcome(event: Event) -> tuple[str, Raw | None, ErrorInfo | None] | None:
    """What a terminal event leaves on the run's record: (status, output, error); None
    for any other event. The one rule for the projection and the live actor (a
    continued run's output is the next run's id, as JSON)."""
    match event:
        case RunCompleted(output=output):
            return "completed", output, None
        case RunFailed(error=error):
            return "failed", None, error
        case RunCancelled():
            return "cancelled", None, None
        case RunContinued(next_run_id=next_run_id):
            return "continued", Raw(msgspec.json.encode(next_run_id)), None
    return None


class EventRecord(msgspec.Struct, frozen=True, gc=False):
    """One entry of a run's log: `seq` orders it within the run (0 is run_created)."""

    run_id: str
    seq: int
    event: Event
    created_at: dt.datetime

    @property
    def event_type(self) -> str:
        return self.event.__struct_config__.tag  # type: ignore[return-value]

    @property
    def correlation_id(self) -> str | None:
        return getattr(self.event, "correlation_id", None)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    """The JSON stored in `workflow_events.payload` (it includes the `type` tag)."""
    return _encoder.encode(event)


def decode_event(payload: bytes | str) -> Event:
    event: Event = _decoder.decode(payload)
    return event


def decode_stored_event(run_id: str, seq: int, payload: bytes | str) -> Event:
    """Decode a stored event, or raise `CorruptRecordError` naming the run and seq."""
    try:
        event: Event = _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptRecordError(f"run {run_id}: the stored event at seq {seq} cannot be "
                                 f"decoded: {exc}", run_id, seq) from None
    return event
