"""Spans of runs and step attempts in one process (the SDK's in-memory exporter)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from worldflow import (
    FatalError,
    RunCancelledError,
    StepFailedError,
    continue_as_new,
    create_world,
    get_step_metadata,
    sleep,
    start,
    step,
    workflow,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

tracer = trace.get_tracer("tests.otel")


def of_run(exporter: InMemorySpanExporter, run_id: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans()
            if (s.attributes or {}).get("worldflow.run_id") == run_id]


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == name),
                  key=lambda s: (s.attributes or {}).get("worldflow.attempt", 0))


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


# -- a retried step ----------------------------------------------------------------------
flaky_calls = 0


@step(name="otel_flaky", backoff="10ms")
async def flaky(x: int) -> int:
    global flaky_calls
    flaky_calls += 1
    if flaky_calls == 1:
        raise ValueError("the first attempt breaks")
    return x * 2


@workflow(name="otel_retrying")
async def retrying(x: int) -> int:
    return await flaky(x) + 1


async def test_retried_step_is_two_attempt_spans_under_the_run_span(
        world: Any, spans: InMemorySpanExporter) -> None:
    global flaky_calls
    flaky_calls = 0
    with tracer.start_as_current_span("caller") as caller:
        run = await start(retrying, 20, world=world)
    assert await run.result() == 41
    caller_ctx = caller.get_span_context()

    run_spans = of_run(spans, run.run_id)
    [run_span] = named(run_spans, "workflow otel_retrying")
    attempts = named(run_spans, "step otel_flaky")
    assert len(run_spans) == 3 and len(attempts) == 2
    assert {s.context.trace_id for s in run_spans} == {caller_ctx.trace_id}
    assert parent_id(run_span) == caller_ctx.span_id
    assert attrs(run_span) | {"worldflow.replayed_events": 0} == {
        "worldflow.run_id": run.run_id, "worldflow.workflow": "otel_retrying",
        "worldflow.outcome": "completed", "worldflow.replayed_events": 0}

    first, second = attempts
    assert [parent_id(s) for s in attempts] == [run_span.context.span_id] * 2
    assert attrs(first) == {"worldflow.run_id": run.run_id, "worldflow.workflow":
                            "otel_retrying", "worldflow.step": "otel_flaky",
                            "worldflow.step_id": f"{run.run_id}:1", "worldflow.attempt": 1,
                            "worldflow.outcome": "retrying"}
    assert first.status.status_code is StatusCode.ERROR
    [exception] = first.events
    assert exception.name == "exception"
    assert attrs(exception)["exception.type"] == "ValueError"  # type: ignore[arg-type]
    assert attrs(exception)["exception.message"] == "the first attempt breaks"  # type: ignore[arg-type]
    assert attrs(second)["worldflow.attempt"] == 2
    assert attrs(second)["worldflow.outcome"] == "completed"
    assert second.status.status_code is StatusCode.OK and not second.events


# -- a failed run ------------------------------------------------------------------------
@step(name="otel_refuse")
async def refuse() -> None:
    raise FatalError("card declined")


@workflow(name="otel_failing")
async def failing() -> None:
    await refuse()


async def test_failed_run_span_has_error_status_and_the_exception(
        memory_world: Any, spans: InMemorySpanExporter) -> None:
    run = await start(failing, world=memory_world)
    with pytest.raises(StepFailedError):
        await run.result()

    run_spans = of_run(spans, run.run_id)
    [run_span] = named(run_spans, "workflow otel_failing")
    [attempt] = named(run_spans, "step otel_refuse")
    assert run_span.parent is None  # started outside any span: a trace of its own
    assert attempt.context.trace_id == run_span.context.trace_id
    assert attrs(attempt)["worldflow.outcome"] == "failed"
    assert attempt.status.status_code is StatusCode.ERROR
    [raised] = attempt.events
    assert attrs(raised)["exception.type"] == "worldflow.errors.FatalError"  # type: ignore[arg-type]
    assert attrs(run_span)["worldflow.outcome"] == "failed"
    assert run_span.status.status_code is StatusCode.ERROR
    [exception] = run_span.events
    assert attrs(exception)["exception.type"] == "FatalError"  # type: ignore[arg-type]
    assert "card declined" in attrs(exception)["exception.message"]  # type: ignore[arg-type,operator]


# -- a run that waits is replayed: a new segment, no second span for done steps -----------
before_calls = 0


@step(name="otel_before")
async def before() -> int:
    global before_calls
    before_calls += 1
    return 1


@step(name="otel_after")
async def after(x: int) -> int:
    return x + 1


@workflow(name="otel_sleeper")
async def sleeper() -> int:
    x = await before()
    await sleep("300ms")  # longer than keep_alive: the run is evicted and replayed
    return await after(x)


async def test_replayed_run_is_a_second_segment_and_done_steps_get_no_new_span(
        spans: InMemorySpanExporter) -> None:
    global before_calls
    before_calls = 0
    async with create_world("memory", keep_alive=0.05) as world:
        with tracer.start_as_current_span("caller") as caller:
            run = await start(sleeper, world=world)
        assert await run.result() == 2
    caller_ctx = caller.get_span_context()

    run_spans = of_run(spans, run.run_id)
    segments = sorted(named(run_spans, "workflow otel_sleeper"), key=lambda s: s.start_time or 0)
    assert [attrs(s)["worldflow.outcome"] for s in segments] == ["waiting", "completed"]
    assert [parent_id(s) for s in segments] == [caller_ctx.span_id] * 2
    assert {s.context.trace_id for s in run_spans} == {caller_ctx.trace_id}
    assert attrs(segments[1])["worldflow.replayed_events"] > 1
    assert before_calls == 1
    [first_step] = named(run_spans, "step otel_before")  # replayed, not run: one span
    [second_step] = named(run_spans, "step otel_after")
    assert parent_id(first_step) == segments[0].context.span_id
    assert parent_id(second_step) == segments[1].context.span_id


# -- the step span is current in the step body ------------------------------------------
@step(name="otel_nested")
async def nested() -> str:
    with tracer.start_as_current_span("inside the step"):
        pass
    return get_step_metadata().step_id


@workflow(name="otel_nesting")
async def nesting() -> str:
    return await nested()


async def test_spans_made_in_a_step_body_are_children_of_the_step_span(
        memory_world: Any, spans: InMemorySpanExporter) -> None:
    run = await start(nesting, world=memory_world)
    step_id = await run.result()
    [step_span] = named(of_run(spans, run.run_id), "step otel_nested")
    [inner] = [s for s in spans.get_finished_spans() if s.name == "inside the step"]
    assert attrs(step_span)["worldflow.step_id"] == step_id
    assert parent_id(inner) == step_span.context.span_id
    assert inner.context.trace_id == step_span.context.trace_id


# -- child workflows and cancelled attempts ---------------------------------------------
@workflow(name="otel_child")
async def child(x: int) -> int:
    return await after(x)


@workflow(name="otel_parent")
async def parent() -> int:
    return await child(1)


async def test_child_run_span_is_under_its_parents_run_span(
        memory_world: Any, spans: InMemorySpanExporter) -> None:
    with tracer.start_as_current_span("caller") as caller:
        run = await start(parent, world=memory_world)
    assert await run.result() == 2
    # the parent waits for its child evicted: a segment that started the child, and one
    # that the child's end woke
    segments = sorted(named(of_run(spans, run.run_id), "workflow otel_parent"),
                      key=lambda s: s.start_time or 0)
    assert [attrs(s)["worldflow.outcome"] for s in segments] == ["waiting", "completed"]
    [child_span] = [s for s in spans.get_finished_spans() if s.name == "workflow otel_child"]
    assert parent_id(child_span) == segments[0].context.span_id
    assert child_span.context.trace_id == caller.get_span_context().trace_id


step_running = asyncio.Event()


@step(name="otel_slow")
async def slow() -> None:
    step_running.set()
    await asyncio.sleep(30)


@workflow(name="otel_cancelled")
async def cancelled() -> None:
    await slow()


async def test_attempt_stopped_by_a_cancel_is_a_cancelled_span(
        memory_world: Any, spans: InMemorySpanExporter) -> None:
    step_running.clear()
    run = await start(cancelled, world=memory_world)
    await asyncio.wait_for(step_running.wait(), 10)
    await run.cancel()
    with pytest.raises(RunCancelledError):
        await run.result()
    run_spans = of_run(spans, run.run_id)
    [attempt] = named(run_spans, "step otel_slow")
    [run_span] = named(run_spans, "workflow otel_cancelled")
    assert attrs(attempt)["worldflow.outcome"] == "cancelled"
    assert attrs(run_span)["worldflow.outcome"] == "cancelled"


# -- continue-as-new: the next run continues the stored context -------------------------
@workflow(name="otel_looping")
async def looping(i: int) -> int:
    if i < 1:
        continue_as_new(i + 1)
    return await after(i)


async def test_continued_run_stays_in_the_callers_trace(
        memory_world: Any, spans: InMemorySpanExporter) -> None:
    with tracer.start_as_current_span("caller") as caller:
        run = await start(looping, 0, world=memory_world, run_id="otel-loop")
    assert await run.result() == 2
    caller_ctx = caller.get_span_context()
    first = named(of_run(spans, "otel-loop"), "workflow otel_looping")
    nxt = [s for s in spans.get_finished_spans() if s.name == "workflow otel_looping"
           and attrs(s)["worldflow.run_id"] != "otel-loop"]
    assert [attrs(s)["worldflow.outcome"] for s in first + nxt] == ["continued", "completed"]
    assert [parent_id(s) for s in first + nxt] == [caller_ctx.span_id] * 2
    assert {s.context.trace_id for s in first + nxt} == {caller_ctx.trace_id}
