"""`HttpStepRunner`: steps sent to another app's `/step`, and nothing lost when the
other side cannot be reached."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest

from tests.transports import workflows as wf
from tests.transports.helpers import BASE, SECRET, parked_run
from worldflow import start
from worldflow.core.context import WorkflowMetadata
from worldflow.core.events import StepCompleted, StepFailed, StepRetrying
from worldflow.core.registry import get_step
from worldflow.transports.http import HttpStepRunner, app, use_http_steps
from worldflow.worlds import create_world

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class FlakyTransport(httpx.AsyncBaseTransport):
    """Fails the first `failures` requests (connection refused, then 503), then passes
    requests on to `inner`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.requests <= self.failures:
            if self.requests % 2:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(503, json={"error": "busy", "message": "try later"})
        return await self.inner.handle_async_request(request)


@contextlib.asynccontextmanager
async def same_storage(world: Any) -> AsyncIterator[Any]:
    """Another world object on `world`'s storage (opened, not started), as a server
    process would have; the memory world has no storage to share, so itself."""
    if world.name == "memory":
        yield world
        return
    if world.name == "sqlite":
        other = create_world("sqlite", path=world.path)
    else:
        other = create_world("postgres", connection_string=world.connection_string,
                             job_prefix=world.job_prefix)
    await other.open()
    try:
        yield other
    finally:
        await other.close()


async def test_steps_run_in_the_other_app_and_the_run_completes(world: Any) -> None:
    async with same_storage(world) as remote:
        transport = httpx.ASGITransport(app=app(remote, secret=SECRET))
        runner = use_http_steps(world, BASE, SECRET, transport=transport)
        try:
            run = await start(wf.remote_steps, 3, world=world)
            result = await run.result(timeout=30)
        finally:
            await runner.aclose()
    assert [r["i"] for r in result] == [0, 1, 2, 3]
    assert {r["world"] for r in result} == {id(remote)}  # the world of the app
    steps = await run.steps()
    assert [s.status for s in steps] == ["completed"] * 5


async def test_unreachable_or_failing_server_retries_until_it_answers(
        memory_world: Any) -> None:
    flaky = FlakyTransport(httpx.ASGITransport(app=app(memory_world, secret=SECRET)), 4)
    runner = use_http_steps(memory_world, BASE, SECRET, transport=flaky, retry_delay=0.01)
    try:
        run = await start(wf.remote_slow, 0, world=memory_world)
        assert await run.result(timeout=30) > 0
    finally:
        await runner.aclose()
    (step,) = await run.steps()
    assert step.status == "completed"
    assert step.attempt == 5  # four failed deliveries, each a retried attempt
    events = [e.event for e in await memory_world.list_events(run.run_id)]
    errors = [e.error.message for e in events if isinstance(e, StepRetrying)]
    assert len(errors) == 4
    assert "could not reach" in errors[0] and "503" in errors[1]


def call_args(step_name: str, args: list[Any]) -> tuple[Any, ...]:
    step = get_step(step_name)
    assert step is not None
    now = dt.datetime.now(dt.UTC)
    return (step, "7", 2, msgspec.Raw(msgspec.json.encode({"args": args, "kwargs": {}})),
            WorkflowMetadata("run-1", "t_remote_steps", now), create_world("memory"), now)


async def test_connection_refused_is_a_short_retry_not_a_failure() -> None:
    runner = HttpStepRunner("http://127.0.0.1:9", SECRET, retry_delay=0.25)
    try:
        outcome = await runner(*call_args("t_add", [1, 2]))
    finally:
        await runner.aclose()
    assert isinstance(outcome, StepRetrying)
    assert (outcome.correlation_id, outcome.attempt) == ("7", 2)
    assert outcome.error.type == "StepTransportError"
    delay = (outcome.retry_at - dt.datetime.now(dt.UTC)).total_seconds()
    assert 0 < delay <= 0.5


@pytest.mark.parametrize(("status", "expected"), [
    (500, StepRetrying), (502, StepRetrying), (401, StepRetrying), (404, StepRetrying),
    (400, StepFailed), (413, StepFailed)])
async def test_error_answers_retry_unless_the_request_can_never_succeed(
        status: int, expected: type) -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(status, json={"error": "x", "message": "why"}))
    runner = HttpStepRunner(BASE, SECRET, transport=transport)
    outcome = await runner(*call_args("t_add", [1, 2]))
    await runner.aclose()
    assert isinstance(outcome, expected)
    assert "why" in outcome.error.message


@pytest.mark.parametrize("content", [b"garbage", b'{"type": "run_started"}',
                                     b'{"type":"step_completed","correlation_id":"8",'
                                     b'"step_name":"t_add","attempt":2,"output":3}'])
async def test_a_200_without_the_right_outcome_is_retried(content: bytes) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=content))
    runner = HttpStepRunner(BASE, SECRET, transport=transport)
    outcome = await runner(*call_args("t_add", [1, 2]))
    await runner.aclose()
    assert isinstance(outcome, StepRetrying)


async def test_runner_signs_what_the_app_verifies(memory_world: Any) -> None:
    await parked_run(memory_world, run_id="run-1")
    runner = HttpStepRunner(BASE + "/", SECRET,
                            transport=httpx.ASGITransport(app=app(memory_world, secret=SECRET)))
    outcome = await runner(*call_args("t_add", [1, 2]))
    await runner.aclose()
    assert isinstance(outcome, StepCompleted)
    assert msgspec.json.decode(outcome.output) == 3


def test_runner_needs_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKFLOW_SECRET", raising=False)
    with pytest.raises(ValueError, match="WORKFLOW_SECRET"):
        HttpStepRunner(BASE)


async def test_use_http_steps_needs_a_started_world() -> None:
    world = create_world("memory")
    with pytest.raises(RuntimeError, match="started world"):
        use_http_steps(world, BASE, SECRET)
