"""A run's timeline, from its event log: one row per step, sleep and hook, each with
segments placed on a shared time axis (percent offsets, so the page needs no script).

A step's row holds one segment per attempt and, between attempts, the retry delay;
steps that ran at the same time sit on their own rows, overlapping on the axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from worldflow.cli.render import format_duration
from worldflow.core.events import (
    HookCreated,
    HookDisposed,
    HookReceived,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
    WaitCompleted,
    WaitCreated,
)

if TYPE_CHECKING:
    import datetime as dt

    from worldflow.core.events import EventRecord
    from worldflow.core.records import RunRecord

__all__ = ["Row", "Segment", "Timeline", "build_timeline", "timeline_dict"]

#: a segment is drawn at least this wide (percent of the axis), so instants stay visible
MIN_WIDTH = 0.4


@dataclass
class Segment:
    kind: str  # "attempt" | "retry-wait" | "sleep" | "hook"
    status: str  # "completed" | "failed" | "retried" | "running" | "waiting"
    start: dt.datetime
    end: dt.datetime
    title: str
    left: float = 0.0
    width: float = 0.0


@dataclass
class Row:
    kind: str  # "step" | "sleep" | "hook"
    key: str
    label: str
    status: str
    start: dt.datetime
    segments: list[Segment] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    mark_times: list[tuple[dt.datetime, str]] = field(default_factory=list)
    attempts: int = 0


@dataclass
class Timeline:
    start: dt.datetime
    end: dt.datetime
    rows: list[Row]
    ticks: list[tuple[float, str]]


def build_timeline(run: RunRecord, events: list[EventRecord], now: dt.datetime) -> Timeline:
    """The timeline of `run` from its log; unfinished items extend to `now`."""
    start = run.started_at or run.created_at
    end = run.completed_at or max(now, start)
    if events:
        end = max(end, events[-1].created_at)
    rows: dict[tuple[str, str], Row] = {}
    for record in events:
        _apply(rows, record, end)
    for row in rows.values():
        _close_open_segments(row, end, run.status.is_terminal)
    span = max((end - start).total_seconds(), 0.001)

    def pos(moment: dt.datetime) -> float:
        return min(max((moment - start).total_seconds() / span * 100, 0.0), 100.0)

    ordered = sorted(rows.values(), key=lambda row: row.start)
    for row in ordered:
        for segment in row.segments:
            segment.left = pos(segment.start)
            segment.width = max(pos(segment.end) - segment.left, MIN_WIDTH)
            segment.left = min(segment.left, 100 - MIN_WIDTH)
        row.marks = [(pos(moment), title) for moment, title in row.mark_times]
    ticks = [(pct, "+" + format_duration(span * 1000 * pct / 100))
             for pct in (0.0, 25.0, 50.0, 75.0, 100.0)]
    return Timeline(start, end, ordered, ticks)


def _apply(rows: dict[tuple[str, str], Row], record: EventRecord, end: dt.datetime) -> None:
    event, at = record.event, record.created_at
    row: Row | None
    match event:
        case StepStarted(correlation_id=cid, step_name=name, attempt=attempt):
            row = rows.setdefault(("step", cid), Row("step", cid, f"{name} #{cid}", "running",
                                                     at))
            row.status, row.attempts = "running", max(row.attempts, attempt)
            if row.segments and row.segments[-1].kind == "retry-wait":
                row.segments[-1].end = at
            row.segments.append(Segment("attempt", "running", at, at, f"attempt {attempt}"))
        case StepRetrying(correlation_id=cid, attempt=attempt, error=error, retry_at=retry_at):
            row = rows.get(("step", cid))
            if row is not None:
                _finish_attempt(row, at, "retried",
                                f"attempt {attempt} failed: {error.type}: {error.message}")
                delay = format_duration((retry_at - at).total_seconds() * 1000)
                row.segments.append(Segment("retry-wait", "waiting", at, min(retry_at, end),
                                            f"retry delay {delay}"))
        case StepCompleted(correlation_id=cid, attempt=attempt):
            row = rows.get(("step", cid))
            if row is not None:
                row.status = "completed"
                _finish_attempt(row, at, "completed", f"attempt {attempt} completed")
        case StepFailed(correlation_id=cid, attempt=attempt, error=error):
            row = rows.get(("step", cid))
            if row is not None:
                row.status = "failed"
                _finish_attempt(row, at, "failed",
                                f"attempt {attempt} failed: {error.type}: {error.message}")
        case WaitCreated(correlation_id=cid, resume_at=resume_at):
            row = rows.setdefault(("sleep", cid), Row("sleep", cid, f"sleep #{cid}", "waiting",
                                                      at))
            row.segments.append(Segment("sleep", "running", at, at,
                                        f"sleep until {resume_at.isoformat()}"))
        case WaitCompleted(correlation_id=cid):
            row = rows.get(("sleep", cid))
            if row is not None:
                row.status = "completed"
                _finish_attempt(row, at, "completed", None)
        case HookCreated(correlation_id=cid, token=token):
            label = f"hook {token[:24]}{'…' if len(token) > 24 else ''} #{cid}"
            row = rows.setdefault(("hook", cid), Row("hook", cid, label, "waiting", at))
            row.segments.append(Segment("hook", "running", at, at, f"hook {token}"))
        case HookReceived(correlation_id=cid):
            row = rows.get(("hook", cid))
            if row is not None:
                row.mark_times.append((at, f"payload received at {at.isoformat()}"))
        case HookDisposed(correlation_id=cid):
            row = rows.get(("hook", cid))
            if row is not None:
                row.status = "disposed"
                _finish_attempt(row, at, "completed", None)
        case _:
            pass


def _finish_attempt(row: Row, at: dt.datetime, status: str, title: str | None) -> None:
    for segment in reversed(row.segments):
        if segment.status == "running":
            segment.end, segment.status = at, status
            if title is not None:
                segment.title = title
            return


def _close_open_segments(row: Row, end: dt.datetime, run_ended: bool) -> None:
    for segment in row.segments:
        if segment.status == "running":
            segment.end = end
            if run_ended:  # a hook ends with its run; anything else was cut short
                segment.status = "completed" if segment.kind == "hook" else "cancelled"
        elif segment.kind == "retry-wait" and segment.end < segment.start:
            segment.end = segment.start


def timeline_dict(timeline: Timeline) -> dict[str, Any]:
    """The timeline as JSON (for scripts; the page renders `Timeline` itself)."""
    return {
        "start": timeline.start.isoformat(),
        "end": timeline.end.isoformat(),
        "rows": [{"kind": row.kind, "key": row.key, "label": row.label, "status": row.status,
                  "attempts": row.attempts,
                  "segments": [{"kind": s.kind, "status": s.status, "title": s.title,
                                "start": s.start.isoformat(), "end": s.end.isoformat(),
                                "left": round(s.left, 3), "width": round(s.width, 3)}
                               for s in row.segments],
                  "marks": [{"left": round(left, 3), "title": title}
                            for left, title in row.marks]}
                 for row in timeline.rows],
    }
