"""Records as plain JSON-able dicts: the stable shapes of ``--json`` and the web UI's API.

The shapes are documented in `worldflow.cli.inspect`'s module docstring; change them
only by adding keys. Values the user's code produced (inputs, outputs, payloads) are
decoded from their stored JSON as they are.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import TYPE_CHECKING, Any

import msgspec

from worldflow.core.events import (
    ChildStarted,
    HookReceived,
    HookRejected,
    StepRetrying,
    StepStarted,
)
from worldflow.errors import CorruptRecordError

if TYPE_CHECKING:
    from worldflow.core.events import ErrorInfo, EventRecord
    from worldflow.core.records import HookRecord, RunRecord, StepRecord, StreamChunk
    from worldflow.core.world import World

__all__ = [
    "chunk_dict",
    "chunk_text",
    "decode_raw",
    "duration_ms",
    "error_dict",
    "event_dict",
    "hook_dict",
    "hook_payload_counts",
    "iso",
    "listed_steps",
    "retries_by_step",
    "run_detail",
    "run_summary",
    "shown_name",
    "step_counts",
    "step_dict",
    "stored_step_counts",
    "stream_dict",
]

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def iso(value: dt.datetime | None) -> str | None:
    """An aware datetime as ISO 8601 in UTC (``2024-05-01T12:00:00.123456+00:00``)."""
    return None if value is None else value.astimezone(dt.UTC).isoformat()


def duration_ms(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)


def decode_raw(raw: msgspec.Raw | None) -> Any:
    """A stored JSON value, decoded; a value that is not valid JSON comes back as text."""
    if raw is None:
        return None
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:
        return bytes(raw).decode("utf-8", "replace")


def error_dict(error: ErrorInfo | None, *, traceback: bool = True) -> dict[str, Any] | None:
    if error is None:
        return None
    shape: dict[str, Any] = {"type": error.type, "message": error.message,
                             "fatal": error.fatal}
    if traceback:
        shape["traceback"] = error.traceback
    return shape


def step_counts(steps: list[StepRecord]) -> dict[str, int]:
    counts = {"total": len(steps), "completed": 0, "failed": 0, "running": 0, "pending": 0}
    for step in steps:
        counts[step.status.value] = counts.get(step.status.value, 0) + 1
    return counts


def stored_step_counts(run: RunRecord) -> dict[str, int]:
    """The step counts the world keeps on the run row (no `list_steps` call)."""
    pending = (run.steps_total - run.steps_completed - run.steps_failed
               - run.steps_running)
    return {"total": run.steps_total, "completed": run.steps_completed,
            "failed": run.steps_failed, "running": run.steps_running,
            "pending": max(pending, 0)}


def run_summary(run: RunRecord, steps: list[StepRecord] | None = None) -> dict[str, Any]:
    """A run in a listing: no input, output or traceback (see `run_detail`). Without
    `steps`, the step counts are those kept on the run row."""
    return {
        "run_id": run.run_id,
        "workflow_name": run.workflow_name,
        "status": "corrupt" if run.corrupt is not None else run.status.value,
        "corrupt": run.corrupt,
        "queue": run.queue,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "completed_at": iso(run.completed_at),
        "updated_at": iso(run.updated_at),
        "duration_ms": duration_ms(run.started_at, run.completed_at),
        "step_counts": stored_step_counts(run) if steps is None else step_counts(steps),
        "error": error_dict(run.error, traceback=False),
        "tags": dict(run.tags),
    }


async def listed_steps(world: World, run: RunRecord) -> list[StepRecord]:
    """A listed run's steps, for its counts: none for a corrupt run or corrupt steps
    (one bad row must not break the listing of every run)."""
    if run.corrupt is not None:
        return []
    try:
        return await world.list_steps(run.run_id)
    except CorruptRecordError:
        return []


def run_detail(run: RunRecord, steps: list[StepRecord],
               events: list[EventRecord]) -> dict[str, Any]:
    """A run with its input, output, full error and steps (with their retry history)."""
    retries = retries_by_step(events)
    shape = run_summary(run, steps)
    shape.update({
        "input": decode_raw(run.input),
        "output": decode_raw(run.output),
        "error": error_dict(run.error),
        "steps": [step_dict(step, retries.get(step.correlation_id, [])) for step in steps],
        "parent_run_id": run.parent_run_id,
        "children": [{"run_id": e.event.child_run_id, "workflow_name": e.event.workflow_name}
                     for e in events if isinstance(e.event, ChildStarted)],
    })
    return shape


def retries_by_step(events: list[EventRecord]) -> dict[str, list[dict[str, Any]]]:
    """Each step's failed attempts that were retried, by correlation id, from the log:
    when the attempt failed, its error, and the delay until the next attempt."""
    retries: dict[str, list[dict[str, Any]]] = {}
    started: dict[tuple[str, int], dt.datetime] = {}
    for record in events:
        event = record.event
        if isinstance(event, StepStarted):
            started.setdefault((event.correlation_id, event.attempt), record.created_at)
        elif isinstance(event, StepRetrying):
            retries.setdefault(event.correlation_id, []).append({
                "attempt": event.attempt,
                "failed_at": iso(record.created_at),
                "retry_at": iso(event.retry_at),
                "delay_ms": duration_ms(record.created_at, event.retry_at),
                "error": error_dict(event.error),
            })
    for correlation_id, history in retries.items():
        for retry in history:
            next_start = started.get((correlation_id, retry["attempt"] + 1))
            retry["next_started_at"] = iso(next_start)
    return retries


def step_dict(step: StepRecord, retries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "step_id": step.step_id,
        "correlation_id": step.correlation_id,
        "step_name": step.step_name,
        "status": step.status.value,
        "attempts": step.attempt,
        "input": decode_raw(step.input),
        "output": decode_raw(step.output),
        "error": error_dict(step.error),
        "started_at": iso(step.started_at),
        "completed_at": iso(step.completed_at),
        "duration_ms": duration_ms(step.started_at, step.completed_at),
        "retries": retries,
    }


def event_dict(record: EventRecord) -> dict[str, Any]:
    """One log entry; `data` holds the event's own fields (all but `type`)."""
    data = _decoder.decode(_encoder.encode(record.event))
    data.pop("type", None)
    return {
        "seq": record.seq,
        "type": record.event_type,
        "correlation_id": record.correlation_id,
        "created_at": iso(record.created_at),
        "data": data,
    }


def hook_dict(hook: HookRecord) -> dict[str, Any]:
    return {
        "token": hook.token,
        "run_id": hook.run_id,
        "correlation_id": hook.correlation_id,
        "status": hook.status,
        "created_at": iso(hook.created_at),
        "disposed_at": iso(hook.disposed_at),
    }


#: the payload counts of a hook that has received none
NO_PAYLOADS = {"received": 0, "rejected": 0}


def hook_payload_counts(events: list[EventRecord]) -> dict[str, dict[str, int]]:
    """By token: payloads delivered (`received`) and refused as not valid for a typed
    hook (`rejected`, each a ``hook_rejected`` event saying why)."""
    counts: dict[str, dict[str, int]] = {}
    for record in events:
        event = record.event
        if isinstance(event, HookReceived | HookRejected):
            key = "received" if isinstance(event, HookReceived) else "rejected"
            counts.setdefault(event.token, dict(NO_PAYLOADS))[key] += 1
    return counts


def stream_dict(name: str, chunks: int, closed: bool) -> dict[str, Any]:
    return {"name": name, "chunks": chunks, "closed": closed}


def chunk_dict(chunk: StreamChunk) -> dict[str, Any]:
    """A stream chunk: `encoding` is ``json`` (`data` is the value written) or ``base64``
    (bytes were written; `data` is their base64 text)."""
    value = decode_raw(chunk.data)
    encoding, data = "json", value
    if isinstance(value, dict) and "w" in value:  # the writer's envelope
        if "b" in value:
            encoding, data = "base64", value["b"]
        else:
            data = value.get("v")
    return {"index": chunk.index, "created_at": iso(chunk.created_at),
            "encoding": encoding, "data": data}


def chunk_text(chunk: dict[str, Any]) -> str:
    """A chunk for people: bytes as UTF-8 text when they are, JSON otherwise."""
    if chunk["encoding"] == "base64":
        raw = base64.b64decode(chunk["data"])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return f"<{len(raw)} bytes: {raw[:32].hex()}{'…' if len(raw) > 32 else ''}>"
    data = chunk["data"]
    return data if isinstance(data, str) else _encoder.encode(data).decode()


def shown_name(name: str) -> str:
    """A stream name for people: as is, or quoted like a JSON string when it would not
    show plainly (blank at either end, or characters that are not printable, such as
    a zero-width joiner, which are then written as ``\\uXXXX``)."""
    if name and name == name.strip() and name.isprintable():
        return name
    return '"' + "".join(_escaped(char) for char in name) + '"'


def _escaped(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    if char.isprintable():
        return char
    return f"\\u{ord(char):04x}"
