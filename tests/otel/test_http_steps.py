"""Steps sent over HTTP (`use_http_steps`) stay in the run's trace: the request carries
the attempt's context, and the step server (uvicorn on a real port, in this process)
runs the step body under a ``step NAME`` span that continues it."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from tests.otel.test_spans import attrs, named, of_run, parent_id
from worldflow import create_world, start, step, workflow
from worldflow.core import telemetry
from worldflow.core.context import WorkflowMetadata
from worldflow.core.events import StepCompleted
from worldflow.core.registry import get_step
from worldflow.transports.http import HttpStepRunner, app, serve, use_http_steps

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

SECRET = "otel-http-steps-secret-" + "x" * 12
tracer = trace.get_tracer("tests.otel")

remote_calls = 0


@step(name="otel_remote_flaky", backoff="10ms")
async def remote_flaky(x: int) -> int:
    global remote_calls
    remote_calls += 1
    with tracer.start_as_current_span("inside the remote step"):
        if remote_calls == 1:
            raise ValueError("the first remote attempt breaks")
        return x * 2


@workflow(name="otel_remote")
async def remote(x: int) -> int:
    return await remote_flaky(x) + 1


@pytest.fixture
async def served_world() -> AsyncIterator[Any]:
    """A memory world served on a real port: its engine runs the workflows and sends
    each step attempt over HTTP to that port, where the server runs it."""
    global remote_calls
    remote_calls = 0
    world = create_world("memory")
    async with anyio.create_task_group() as tg:
        port = await tg.start(functools.partial(serve, secret=SECRET, log_level="warning"),
                              world, "127.0.0.1", 0)
        runner = use_http_steps(world, f"http://127.0.0.1:{port}", SECRET)
        try:
            yield world
        finally:
            await runner.aclose()
            tg.cancel_scope.cancel()


def by_kind(spans: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == kind]


async def test_remote_attempts_are_server_spans_under_the_senders_step_spans(
        served_world: Any, spans: InMemorySpanExporter) -> None:
    with tracer.start_as_current_span("caller") as caller:
        run = await start(remote, 20, world=served_world)
    assert await run.result(timeout=30) == 41
    trace_id = caller.get_span_context().trace_id

    attempts = named(of_run(spans, run.run_id), "step otel_remote_flaky")
    sent = by_kind(attempts, SpanKind.INTERNAL)
    served = by_kind(attempts, SpanKind.SERVER)
    assert len(sent) == 2 and len(served) == 2
    for sender, server in zip(sent, served, strict=True):
        assert attrs(server)["worldflow.attempt"] == attrs(sender)["worldflow.attempt"]
        assert attrs(server)["worldflow.remote"] is True
        assert attrs(server)["worldflow.step_id"] == attrs(sender)["worldflow.step_id"]
        assert parent_id(server) == sender.context.span_id
        assert server.context.trace_id == trace_id

    failed, completed = served
    assert failed.status.status_code == StatusCode.ERROR
    assert attrs(failed)["worldflow.outcome"] == "retrying"
    [exception] = [e for e in failed.events if e.name == "exception"]
    assert (exception.attributes or {})["exception.type"] == "ValueError"
    assert completed.status.status_code == StatusCode.OK
    assert attrs(completed)["worldflow.outcome"] == "completed"

    inner = sorted((s for s in spans.get_finished_spans()
                    if s.name == "inside the remote step"), key=lambda s: s.start_time or 0)
    assert [parent_id(s) for s in inner] == [s.context.span_id for s in served]
    assert {s.context.trace_id for s in inner} == {trace_id}


async def test_with_telemetry_off_nothing_is_forwarded_and_the_server_makes_no_span(
        served_world: Any, spans: InMemorySpanExporter,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "active", False)
    with tracer.start_as_current_span("caller") as caller:
        run = await start(remote, 1, world=served_world)
    assert await run.result(timeout=30) == 3
    assert of_run(spans, run.run_id) == []
    inner = [s for s in spans.get_finished_spans() if s.name == "inside the remote step"]
    assert len(inner) == 2
    # outside any trace: each body span is a root of its own
    assert [parent_id(s) for s in inner] == [None, None]
    assert caller.get_span_context().trace_id not in {s.context.trace_id for s in inner}


class Recording(httpx.AsyncBaseTransport):
    """Keeps the headers of each request it passes on to `inner`."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.headers: list[httpx.Headers] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize("active", [True, False])
async def test_step_request_carries_traceparent_only_with_telemetry_active(
        memory_world: Any, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch,
        active: bool) -> None:
    global remote_calls
    remote_calls = 1  # every attempt succeeds
    run = await start(remote, 5, world=memory_world)  # a run for the request to name
    await run.result(timeout=30)
    defn = get_step("otel_remote_flaky")
    assert defn is not None
    monkeypatch.setattr(telemetry, "active", active)
    recording = Recording(httpx.ASGITransport(app=app(memory_world, secret=SECRET)))
    runner = HttpStepRunner("http://testserver", SECRET, transport=recording)
    try:
        with tracer.start_as_current_span("the step span") as current:
            outcome = await runner(defn, "9", 1, msgspec.Raw(b'{"args":[5],"kwargs":{}}'),
                                   WorkflowMetadata(run.run_id, "otel_remote",
                                                    memory_world.now()),
                                   memory_world, memory_world.now())
    finally:
        await runner.aclose()
    assert isinstance(outcome, StepCompleted)
    [headers] = recording.headers
    context = current.get_span_context()
    served = by_kind(list(spans.get_finished_spans()), SpanKind.SERVER)
    if active:
        assert headers["traceparent"] == (f"00-{context.trace_id:032x}-"
                                          f"{context.span_id:016x}-{context.trace_flags:02x}")
        [server] = served
        assert parent_id(server) == context.span_id
        assert attrs(server)["worldflow.outcome"] == "completed"
    else:
        assert "traceparent" not in headers
        assert served == []
