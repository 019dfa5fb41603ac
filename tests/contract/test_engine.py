"""The engine's promises, checked on every world (memory, sqlite, postgres)."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import uuid
from typing import Any

import pytest

import worldflow
from worldflow import (
    FatalError,
    HookNotFoundError,
    NonDeterminismError,
    RetryableError,
    RunCancelledError,
    RunNotFoundError,
    RunStatus,
    StepFailedError,
    create_hook,
    get_run,
    get_step_metadata,
    resume_hook,
    sleep,
    start,
    step,
    workflow,
)

ran: collections.Counter[str] = collections.Counter()
seen_metadata: list[tuple[str, int]] = []


def evict_when_waiting(world: Any) -> None:
    """Make the engine evict a run as soon as it only waits, so that it replays on wake."""
    world.engine.keep_alive = 0.0


@step(name="c_double")
async def double(x: int) -> int:
    ran[f"double:{x}"] += 1
    return x * 2


@step(name="c_add")
async def add(a: int, b: int) -> int:
    ran["add"] += 1
    return a + b


@workflow(name="c_sum_of_doubles")
async def sum_of_doubles(values: list[int]) -> int:
    doubled = await asyncio.gather(*(double(v) for v in values))
    total = 0
    for d in doubled:
        total = await add(total, d)
    return total


async def test_start_returns_run_whose_result_is_the_workflow_value(world: Any) -> None:
    run = await start(sum_of_doubles, [1, 2, 3], world=world)
    assert await run.result(timeout=30) == 12
    assert await run.status() == RunStatus.COMPLETED
    steps = await run.steps()
    assert [s.step_name for s in steps] == ["c_double"] * 3 + ["c_add"] * 3
    assert all(s.status == "completed" and s.attempt == 1 for s in steps)
    info = await world.get_run(run.run_id)
    assert info.workflow_name == "c_sum_of_doubles"
    assert info.started_at is not None and info.completed_at >= info.started_at


async def test_start_with_same_run_id_twice_makes_one_run_and_runs_steps_once(world: Any) -> None:
    run_id = f"idem-{uuid.uuid4().hex}"
    before = ran["double:1001"]
    first = await start(sum_of_doubles, [1001], world=world, run_id=run_id)
    second = await start(sum_of_doubles, [1001], world=world, run_id=run_id)
    assert first.run_id == second.run_id == run_id
    assert await first.result(timeout=30) == 2002
    assert await second.result(timeout=30) == 2002
    third = await start(sum_of_doubles, [1001], world=world, run_id=run_id)
    assert await third.result(timeout=30) == 2002
    assert ran["double:1001"] - before == 1
    events = await world.list_events(run_id)
    assert sum(1 for e in events if e.event_type == "run_created") == 1


async def test_get_run_finds_existing_and_rejects_unknown(world: Any) -> None:
    run = await start(sum_of_doubles, [5], world=world)
    again = await get_run(run.run_id, world=world)
    assert await again.result(timeout=30) == 10
    with pytest.raises(RunNotFoundError, match="run not found: nope"):
        await get_run("nope", world=world)


# -- retries ---------------------------------------------------------------------------
attempts_seen: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)


@step(name="c_flaky", max_retries=3, backoff=("10ms", 2, "100ms"))
async def flaky(key: str, fail_times: int) -> str:
    meta = get_step_metadata()
    attempts_seen[key].append((meta.step_id, meta.attempt))
    if meta.attempt <= fail_times:
        raise ValueError(f"failure {meta.attempt}")
    return f"ok after {meta.attempt}"


@step(name="c_retry_after", max_retries=2)
async def retry_after_step(key: str) -> str:
    meta = get_step_metadata()
    attempts_seen[key].append((meta.step_id, meta.attempt))
    if meta.attempt == 1:
        raise RetryableError("later", retry_after="50ms")
    return "done"


@step(name="c_fatal", max_retries=5)
async def fatal_step(key: str) -> str:
    attempts_seen[key].append(("", get_step_metadata().attempt))
    raise FatalError("bad input, never retry")


@workflow(name="c_retry_wf")
async def retry_wf(key: str, fail_times: int) -> str:
    return await flaky(key, fail_times)


@workflow(name="c_retry_after_wf")
async def retry_after_wf(key: str) -> str:
    return await retry_after_step(key)


@workflow(name="c_fatal_wf")
async def fatal_wf(key: str) -> str:
    try:
        await fatal_step(key)
    except FatalError as exc:
        return f"caught {exc.message}"
    return "not raised"


@workflow(name="c_exhausted_wf")
async def exhausted_wf(key: str) -> dict[str, Any]:
    try:
        await flaky(key, 99)
    except StepFailedError as exc:
        return {"type": exc.error_type, "message": exc.message, "step": exc.step_name,
                "has_tb": "ValueError" in (exc.traceback or "")}
    return {}


async def test_failing_step_is_retried_with_stable_step_id(world: Any) -> None:
    key = uuid.uuid4().hex
    run = await start(retry_wf, key, 2, world=world)
    assert await run.result(timeout=30) == "ok after 3"
    ids = {step_id for step_id, _ in attempts_seen[key]}
    assert len(ids) == 1
    assert [a for _, a in attempts_seen[key]] == [1, 2, 3]
    (only,) = await run.steps()
    assert only.status == "completed" and only.attempt == 3
    types = [e.event_type for e in await world.list_events(run.run_id)]
    assert types.count("step_retrying") == 2 and types.count("step_started") == 3


async def test_retryable_error_waits_retry_after(world: Any) -> None:
    key = uuid.uuid4().hex
    run = await start(retry_after_wf, key, world=world)
    assert await run.result(timeout=30) == "done"
    events = await world.list_events(run.run_id)
    retrying = next(e for e in events if e.event_type == "step_retrying")
    second_start = [e for e in events if e.event_type == "step_started"][1]
    assert retrying.event.retry_at - retrying.created_at >= dt.timedelta(milliseconds=45)
    assert second_start.created_at >= retrying.event.retry_at


async def test_fatal_error_is_not_retried_and_reaches_the_workflow(world: Any) -> None:
    key = uuid.uuid4().hex
    run = await start(fatal_wf, key, world=world)
    assert await run.result(timeout=30) == "caught bad input, never retry"
    assert [a for _, a in attempts_seen[key]] == [1]
    (only,) = await run.steps()
    assert only.status == "failed" and only.error.type == "FatalError"


async def test_retries_exhausted_raise_step_failed_error_in_workflow(world: Any) -> None:
    key = uuid.uuid4().hex
    run = await start(exhausted_wf, key, world=world)
    result = await run.result(timeout=30)
    assert result == {"type": "ValueError", "message": "failure 4", "step": "c_flaky",
                      "has_tb": True}
    assert [a for _, a in attempts_seen[key]] == [1, 2, 3, 4]


@workflow(name="c_uncaught_wf")
async def uncaught_wf(key: str) -> None:
    await flaky(key, 99)


async def test_uncaught_step_failure_fails_the_run(world: Any) -> None:
    run = await start(uncaught_wf, uuid.uuid4().hex, world=world)
    with pytest.raises(StepFailedError) as info:
        await run.result(timeout=30)
    assert info.value.step_name == "c_flaky" and info.value.error_type == "ValueError"
    assert await run.status() == RunStatus.FAILED
    record = await world.get_run(run.run_id)
    assert record.error.type == "StepFailedError" and "failure 4" in record.error.message


# -- sleep, eviction, replay -------------------------------------------------------------
@workflow(name="c_sleep_forms")
async def sleep_forms(until_iso: str) -> list[str]:
    marks = [worldflow.now().isoformat()]
    await sleep("20ms")
    await sleep(0.02)
    await sleep(dt.timedelta(milliseconds=20))
    await sleep(dt.datetime.fromisoformat(until_iso))
    marks.append(worldflow.now().isoformat())
    return marks


async def test_sleep_accepts_every_duration_form(world: Any) -> None:
    until = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=150)
    run = await start(sleep_forms, until.isoformat(), world=world)
    first, last = await run.result(timeout=30)
    assert dt.datetime.fromisoformat(first) < until <= dt.datetime.fromisoformat(last)
    waits = [e for e in await world.list_events(run.run_id) if e.event_type == "wait_created"]
    assert len(waits) == 4
    assert waits[3].event.resume_at == until


@workflow(name="c_fanout_sleep")
async def fanout_sleep(n: int) -> list[int]:
    values = await asyncio.gather(*(double(i) for i in range(n)))
    await sleep("150ms")
    more = await asyncio.gather(*(double(v) for v in values))
    return [a + b for a, b in zip(values, more, strict=True)]


async def test_sleeping_run_is_evicted_and_replays_identically(world: Any) -> None:
    evict_when_waiting(world)
    n = 8
    before = {i: ran[f"double:{i}"] for i in range(n)}
    run = await start(fanout_sleep, n, world=world)
    for _ in range(200):
        events = await world.list_events(run.run_id)
        if any(e.event_type == "wait_created" for e in events):
            break
        await asyncio.sleep(0.01)
    for _ in range(500):  # the actor gives the run back once wait_created is committed
        if run.run_id not in world.engine.actors:
            break
        await asyncio.sleep(0.01)
    assert run.run_id not in world.engine.actors  # a sleeping run holds no actor
    assert await run.result(timeout=30) == [3 * 2 * i for i in range(n)]
    for i in range(n):  # the first fan-out was not re-run by the replay
        assert ran[f"double:{i}"] - before[i] == (2 if i % 2 == 0 else 1)
    events = await world.list_events(run.run_id)
    assert [e.seq for e in events] == list(range(len(events)))
    assert sum(1 for e in events if e.event_type == "step_completed") == 2 * n


determinism_values: dict[str, Any] = {}


@step(name="c_remember")
async def remember(key: str, value: Any) -> None:
    determinism_values[key] = value


@workflow(name="c_determinism_wf")
async def determinism_wf(key: str) -> list[Any]:
    values = [worldflow.now().isoformat(), worldflow.random(), str(worldflow.uuid4())]
    await remember(key, values)
    await sleep("100ms")
    return values


async def test_now_random_uuid4_are_the_same_on_replay(world: Any) -> None:
    evict_when_waiting(world)
    key = uuid.uuid4().hex
    run = await start(determinism_wf, key, world=world)
    values = await run.result(timeout=30)
    assert values == determinism_values[key]
    assert 0 <= values[1] < 1 and uuid.UUID(values[2]).version == 4


branch_flag = {"changed": False}


@step(name="c_branch_a")
async def branch_a() -> str:
    return "a"


@step(name="c_branch_b")
async def branch_b() -> str:
    return "b"


@workflow(name="c_changing_wf")
async def changing_wf() -> str:
    first = await (branch_b() if branch_flag["changed"] else branch_a())
    await sleep("100ms")
    return first + await branch_a()


async def test_code_that_no_longer_matches_its_log_fails_with_nondeterminism(world: Any) -> None:
    evict_when_waiting(world)
    branch_flag["changed"] = False
    run = await start(changing_wf, world=world)
    for _ in range(300):
        if any(e.event_type == "wait_created" for e in await world.list_events(run.run_id)):
            break
        await asyncio.sleep(0.01)
    branch_flag["changed"] = True  # a "deploy" that changed the code under the run
    try:
        with pytest.raises(NonDeterminismError, match=r"position 1.*c_branch_b.*c_branch_a"):
            await run.result(timeout=30)
    finally:
        branch_flag["changed"] = False
    assert await run.status() == RunStatus.FAILED


# -- serialisation errors ------------------------------------------------------------------
@workflow(name="c_bad_arg_wf")
async def bad_arg_wf() -> str:
    try:
        await double(object())  # type: ignore[arg-type]
    except TypeError as exc:
        return str(exc)
    return "no error"


async def test_unencodable_step_argument_fails_at_call_site_naming_the_step(world: Any) -> None:
    run = await start(bad_arg_wf, world=world)
    message = await run.result(timeout=30)
    assert "c_double" in message and "argument 1" in message
    assert await run.steps() == []


async def test_unencodable_workflow_argument_raises_before_anything_is_stored(world: Any) -> None:
    with pytest.raises(TypeError, match="c_sum_of_doubles"):
        await start(sum_of_doubles, object(), world=world)


# -- hooks and cancel ------------------------------------------------------------------------
@workflow(name="c_hook_wf")
async def hook_wf(token: str, count: int) -> list[Any]:
    hook = create_hook(token)
    received = []
    async for payload in hook:
        received.append(payload)
        if len(received) == count:
            break
    return received


async def wait_for_hook(world: Any, token: str) -> None:
    for _ in range(500):
        hook = await world.get_hook(token)
        if hook is not None and hook.status == "active":
            return
        await asyncio.sleep(0.01)
    raise AssertionError("hook never created")


async def test_hook_receives_payloads_in_order_then_is_disposed(world: Any) -> None:
    evict_when_waiting(world)
    token = f"tok-{uuid.uuid4().hex}"
    run = await start(hook_wf, token, 3, world=world)
    await wait_for_hook(world, token)
    for i in range(3):
        assert await resume_hook(token, {"n": i}, world=world) == run.run_id
    assert await run.result(timeout=30) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert (await world.get_hook(token)).status == "disposed"
    with pytest.raises(HookNotFoundError):
        await resume_hook(token, {"n": 9}, world=world)
    with pytest.raises(HookNotFoundError):
        await resume_hook("no-such-token", {}, world=world)


@workflow(name="c_long_sleep_wf")
async def long_sleep_wf() -> str:
    await sleep("1h")
    return "woke"


async def test_cancel_ends_a_sleeping_run_cancelled(world: Any) -> None:
    run = await start(long_sleep_wf, world=world)
    for _ in range(300):
        if any(e.event_type == "wait_created" for e in await world.list_events(run.run_id)):
            break
        await asyncio.sleep(0.01)
    assert await run.cancel() is True
    with pytest.raises(RunCancelledError):
        await run.result(timeout=30)
    assert await run.status() == RunStatus.CANCELLED
    assert await run.cancel() is False


started_slow: dict[str, asyncio.Event] = {}
slow_finished: collections.Counter[str] = collections.Counter()


@step(name="c_slow_step")
async def slow_step(key: str) -> None:
    started_slow.setdefault(key, asyncio.Event()).set()
    await asyncio.sleep(30)
    slow_finished[key] += 1


@workflow(name="c_slow_wf")
async def slow_wf(key: str) -> None:
    await slow_step(key)


async def test_cancel_stops_a_running_step(world: Any) -> None:
    key = uuid.uuid4().hex
    started_slow[key] = asyncio.Event()
    run = await start(slow_wf, key, world=world)
    await asyncio.wait_for(started_slow[key].wait(), 10)
    await run.cancel()
    with pytest.raises(RunCancelledError):
        await run.result(timeout=10)
    assert slow_finished[key] == 0


# -- load -------------------------------------------------------------------------------
async def test_many_concurrent_runs_all_complete(world: Any) -> None:
    runs = await asyncio.gather(*(start(sum_of_doubles, [i, 1], world=world)
                                  for i in range(300)))
    results = await asyncio.gather(*(r.result(timeout=120) for r in runs))
    assert results == [2 * i + 2 for i in range(300)]


# -- streams ---------------------------------------------------------------------------------
stream_attempts: collections.Counter[str] = collections.Counter()


@step(name="c_streamer", max_retries=2, backoff="10ms")
async def streamer(key: str, n: int) -> int:
    stream_attempts[key] += 1
    writer = worldflow.get_writable("progress")
    for i in range(n):
        await writer.write({"i": i})
        if stream_attempts[key] == 1 and i == 2:
            raise ValueError("fail halfway once")
    await writer.write(b"\x00raw")
    await writer.close()
    return n


@workflow(name="c_stream_wf")
async def stream_wf(key: str, n: int) -> int:
    return await streamer(key, n)


async def test_stream_chunks_are_read_in_order_and_a_retry_does_not_duplicate(world: Any) -> None:
    key = uuid.uuid4().hex
    run = await start(stream_wf, key, 5, world=world)
    chunks = [c async for c in run.stream("progress")]
    assert chunks == [{"i": i} for i in range(5)] + [b"\x00raw"]
    assert await run.result(timeout=30) == 5
    assert stream_attempts[key] == 2
    assert [c async for c in run.stream("progress", start=4)] == [{"i": 4}, b"\x00raw"]
