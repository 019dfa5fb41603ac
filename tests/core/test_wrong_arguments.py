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
    (lambda: step(name="a\x00b"), "NUL character"),
    (lambda: workflow(name="a\x00b"), "NUL character"),
    (lambda: workflow(timeout="forever"), "workflow timeout"),
    (lambda: Queue("q-bad", concurrency=0), "concurrency"),
])
def test_wrong_options_are_named(make: Any, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        make()


@step(name="wa_says_int")
async def says_int() -> int:
    return "not a number"  # type: ignore[return-value]


@workflow(name="wa_takes_step")
async def takes_step() -> int:
    return await says_int()


@workflow(name="wa_returns_int")
async def returns_int(value: Any) -> int:
    return value  # type: ignore[no-any-return]


@workflow(name="wa_child_says_int")
async def child_says_int() -> int:
    return await returns_int("nine")


async def test_a_step_result_that_is_not_its_annotation_fails_the_run_naming_both(
        memory_world: Any) -> None:
    run = await start(takes_step, world=memory_world)
    with pytest.raises(worldflow.RunFailedError,
                       match=r"TypeError: step 'wa_says_int' returned a value that does not "
                             r"match its return annotation \(int\)"):
        await run.result(timeout=10)


async def test_a_workflow_result_that_is_not_its_annotation_is_named_by_result(
        memory_world: Any) -> None:
    """The run completed (what it returned is stored as is); `result()`, which gives the
    value as the workflow's return annotation says, names the run, the workflow and the
    annotation. A child's result in its parent is decoded the same way."""
    run = await start(returns_int, "seven", world=memory_world)
    with pytest.raises(TypeError, match=rf"run {run.run_id}: workflow 'wa_returns_int' "
                                        r"returned a value that does not match its return "
                                        r"annotation \(int\)"):
        await run.result(timeout=10)
    assert (await run.status()) == "completed"
    lax = await start(returns_int, "7", world=memory_world)  # as lax as the arguments
    assert await lax.result(timeout=10) == 7
    parent = await start(child_says_int, world=memory_world)
    with pytest.raises(worldflow.RunFailedError, match="workflow 'wa_returns_int' returned"):
        await parent.result(timeout=10)
