"""The run timeline built from an event log (pure function, synthetic logs)."""

from __future__ import annotations

import datetime as dt

from msgspec import Raw

from worldflow.cli.web.timeline import build_timeline
from worldflow.core.events import (
    ErrorInfo,
    EventRecord,
    HookCreated,
    HookReceived,
    RunCreated,
    RunStarted,
    StepCompleted,
    StepRetrying,
    StepStarted,
    WaitCreated,
)
from worldflow.core.records import RunRecord, RunStatus

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def at(ms: float) -> dt.datetime:
    return T0 + dt.timedelta(milliseconds=ms)


def _run(status: RunStatus, completed_ms: float | None) -> RunRecord:
    return RunRecord("r", "wf", status, Raw(b"null"), None, None, T0, T0,
                     None if completed_ms is None else at(completed_ms), T0)


def _log(*events: tuple[float, object]) -> list[EventRecord]:
    return [EventRecord("r", seq, event, at(ms))  # type: ignore[arg-type]
            for seq, (ms, event) in enumerate(events)]


ERROR = ErrorInfo("ValueError", "boom")


def test_retries_become_attempt_segments_with_the_delay_between_them() -> None:
    log = _log((0, RunCreated("wf", Raw(b"null"))), (0, RunStarted()),
               (0, StepStarted("1", "s", 1)), (10, StepRetrying("1", "s", 1, ERROR, at(30))),
               (30, StepStarted("1", "s", 2)), (40, StepCompleted("1", "s", 2, Raw(b"1"))))
    timeline = build_timeline(_run(RunStatus.COMPLETED, 100), log, at(500))
    (row,) = timeline.rows
    assert row.attempts == 2 and row.status == "completed"
    kinds = [(s.kind, s.status, round(s.left), round(s.width)) for s in row.segments]
    assert kinds == [("attempt", "retried", 0, 10), ("retry-wait", "waiting", 10, 20),
                     ("attempt", "completed", 30, 10)]
    assert "retry delay 20ms" in row.segments[1].title
    assert [label for _, label in timeline.ticks] == ["+0ms", "+25ms", "+50ms", "+75ms",
                                                      "+100ms"]


def test_parallel_steps_get_their_own_overlapping_rows() -> None:
    log = _log((0, StepStarted("1", "a", 1)), (0, StepStarted("2", "b", 1)),
               (50, StepCompleted("1", "a", 1, Raw(b"1"))),
               (80, StepCompleted("2", "b", 1, Raw(b"1"))))
    rows = build_timeline(_run(RunStatus.COMPLETED, 100), log, at(100)).rows
    assert [row.label for row in rows] == ["a #1", "b #2"]
    assert rows[0].segments[0].left == rows[1].segments[0].left == 0


def test_a_running_run_extends_open_items_to_now() -> None:
    log = _log((0, StepStarted("1", "slow", 1)), (10, WaitCreated("2", at(10_000))),
               (20, HookCreated("3", "tok")), (30, HookReceived("3", "tok", Raw(b"{}"))))
    timeline = build_timeline(_run(RunStatus.RUNNING, None), log, at(200))
    assert timeline.end == at(200)
    step, sleep, hook = timeline.rows
    assert step.segments[0].status == "running" and step.segments[0].end == at(200)
    assert sleep.kind == "sleep" and sleep.segments[0].status == "running"
    assert hook.kind == "hook" and len(hook.marks) == 1 and round(hook.marks[0][0]) == 15


def test_items_cut_short_by_the_run_ending_are_marked_cancelled() -> None:
    log = _log((0, StepStarted("1", "slow", 1)), (20, HookCreated("2", "tok")))
    step, hook = build_timeline(_run(RunStatus.CANCELLED, 50), log, at(900)).rows
    assert step.segments[0].status == "cancelled" and step.segments[0].end == at(50)
    assert hook.segments[0].status == "completed"  # a hook ends with its run
