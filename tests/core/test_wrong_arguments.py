"""Public functions called with a wrong type or value: a clear error naming the argument,
and nothing stored."""

from __future__ import annotations

from typing import Any

import pytest

import worldflow
from worldflow import Queue, create_world, get_run, resume_hook, sleep, start, step, workflow


@workflow(name="w_noop")
async def noop() -> None:
    return None


@pytest.mark.parametrize(("call", "message"), [
    (lambda w: start(noop, world=w, run_id=5), "run_id"),
    (lambda w: start(noop, world=w, run_id="x" * 201), "run_id"),
    (lambda w: start(noop, world=w, dedup_key=""), "dedup_key"),
    (lambda w: start(noop, world=w, queue="no-such-queue"), "unknown queue"),
    (lambda w: start(len, world=w), "@workflow"),
    (lambda w: get_run(42, world=w), "run_id"),
    (lambda w: get_run("", world=w), "run_id"),
    (lambda w: resume_hook(None, {}, world=w), "hook token"),
    (lambda w: resume_hook("t", object(), world=w), "hook payload"),
    (lambda w: sleep(-1), "sleep duration"),
    (lambda w: sleep("tomorrow"), "sleep duration"),
    (lambda w: worldflow.gather(limit=-2), "limit"),
])
async def test_wrong_arguments_are_named(memory_world: Any, call: Any, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        await call(memory_world)
    assert (await memory_world.list_runs()).items == []


async def test_result_timeout_must_be_seconds(memory_world: Any) -> None:
    run = await start(noop, world=memory_world)
    with pytest.raises(TypeError, match="timeout"):
        await run.result(timeout="soon")  # type: ignore[arg-type]
    assert await run.result(timeout=10) is None


@pytest.mark.parametrize(("make", "message"), [
    (lambda: create_world("memory", queue_concurrency=0), "queue_concurrency"),
    (lambda: create_world("memory", lease_seconds=-1), "lease_seconds"),
    (lambda: create_world("sqlite", path=":memory:"), "file path"),
    (lambda: create_world("sqlite", path="x.db", synchronous="SOMETIMES"), "synchronous"),
    (lambda: create_world("postgres", connection_string="postgresql://h/db",
                          job_prefix="bad prefix!"), "job_prefix"),
    (lambda: step(max_retries=-1), "max_retries"),
    (lambda: step(timeout="0s"), "timeout"),
    (lambda: step(backoff=("1s", 0.5, "1m")), "backoff factor"),
    (lambda: step(retry_on=[42]), "retry_on"),
    (lambda: step(name=""), "name"),
    (lambda: workflow(timeout="forever"), "workflow timeout"),
    (lambda: Queue("q-bad", concurrency=0), "concurrency"),
])
def test_wrong_options_are_named(make: Any, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        make()
