"""What a running run waits for (`worldflow.cli.waiting`): derived from event sequences,
and read from real runs waiting on each kind of thing, on every world."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import anyio
import msgspec
import pytest

from worldflow import (
    RetryableError,
    create_hook,
    receive,
    send,
    sleep,
    start,
    step,
    workflow,
)
from worldflow.cli.waiting import run_waiting, waiting_for, waiting_text
from worldflow.core.events import (
    CancelRequested,
    ChildEnded,
    ChildStarted,
    ErrorInfo,
    EventRecord,
    HookCreated,
    HookDisposed,
    HookReceived,
    MessageReceived,
    MessageWaiting,
    RunCreated,
    RunStarted,
    StepCompleted,
    StepRetrying,
    StepStarted,
    WaitCompleted,
    WaitCreated,
)
from worldflow.core.records import RunRecord, RunStatus

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
RAW = msgspec.Raw(b"null")


def _run(status: RunStatus = RunStatus.RUNNING) -> RunRecord:
    return RunRecord("r1", "flow", status, RAW, None, None, T0, T0, None, T0)


def _log(*events: Any) -> list[EventRecord]:
    return [EventRecord("r1", seq, event, T0 + dt.timedelta(seconds=seq))
            for seq, event in enumerate(
                [RunCreated("flow", RAW), RunStarted(), *events])]


def _kind(*events: Any) -> str | None:
    waiting = waiting_for(_run(), _log(*events))
    return None if waiting is None else waiting["kind"]


# -- derivation from event sequences ----------------------------------------------------
def test_an_open_sleep_says_until_when() -> None:
    until = T0 + dt.timedelta(hours=1)
    waiting = waiting_for(_run(), _log(WaitCreated("1", until)))
    assert waiting is not None
    assert (waiting["kind"], waiting["label"], waiting["until"]) == (
        "sleep", "sleeping", until.isoformat())
    assert waiting_text(waiting) == f"sleeping until {until.isoformat()}"


def test_a_completed_sleep_is_no_longer_waited_on() -> None:
    until = T0 + dt.timedelta(hours=1)
    assert _kind(WaitCreated("1", until), WaitCompleted("1"),
                 HookCreated("2", "tok")) == "hook"


def test_an_open_hook_names_its_token() -> None:
    waiting = waiting_for(_run(), _log(HookCreated("1", "approve-42")))
    assert waiting is not None
    assert (waiting["kind"], waiting["token"]) == ("hook", "approve-42")
    assert waiting_text(waiting) == "waiting for hook (token approve-42)"


def test_a_hook_raced_with_a_timeout_shows_the_hook_first() -> None:
    until = T0 + dt.timedelta(minutes=5)
    assert _kind(HookCreated("1", "t"), WaitCreated("2", until)) == "hook"


def test_a_hook_that_had_its_payload_gives_way_to_a_later_sleep() -> None:
    until = T0 + dt.timedelta(minutes=5)
    assert _kind(HookCreated("1", "t"), HookReceived("1", "t", RAW),
                 WaitCreated("2", until)) == "sleep"
    assert _kind(HookCreated("1", "t"), HookReceived("1", "t", RAW),
                 HookDisposed("1", "t")) == "message"


def test_a_retry_backoff_says_which_step_and_until_when() -> None:
    retry_at = T0 + dt.timedelta(seconds=30)
    error = ErrorInfo("ValueError", "boom")
    waiting = waiting_for(_run(), _log(StepStarted("1", "charge", 1),
                                       StepRetrying("1", "charge", 1, error, retry_at)))
    assert waiting is not None
    assert (waiting["kind"], waiting["label"], waiting["step_name"], waiting["until"]) == (
        "retrying", "retrying", "charge", retry_at.isoformat())
    # the next attempt starting ends the backoff
    assert _kind(StepStarted("1", "charge", 1), StepRetrying("1", "charge", 1, error, retry_at),
                 StepStarted("1", "charge", 2)) == "running"


def test_a_running_step_comes_before_anything_else() -> None:
    until = T0 + dt.timedelta(hours=1)
    waiting = waiting_for(_run(), _log(WaitCreated("1", until), StepStarted("2", "load", 1)))
    assert waiting is not None
    assert (waiting["kind"], waiting["label"], waiting["detail"]) == (
        "running", "running step", "load #2")
    assert _kind(WaitCreated("1", until), StepStarted("2", "load", 1),
                 StepCompleted("2", "load", 1, RAW)) == "sleep"


def test_an_open_child_names_the_child_run() -> None:
    waiting = waiting_for(_run(), _log(ChildStarted("1", "r1/1", "child_flow")))
    assert waiting is not None
    assert (waiting["kind"], waiting["child_run_id"], waiting["workflow_name"]) == (
        "child", "r1/1", "child_flow")
    assert _kind(ChildStarted("1", "r1/1", "c"), ChildEnded("1", "r1/1", "completed")) \
        == "message"


def test_nothing_open_in_a_started_run_is_a_message_wait() -> None:
    assert _kind(MessageReceived("orders", RAW)) == "message"


def test_a_log_that_ends_at_the_runs_start_is_a_run_beginning() -> None:
    """A run created started holds run_started before its workflow has run: until
    something follows it, the run is beginning, not waiting for a message."""
    waiting = waiting_for(_run(), _log())
    assert waiting is not None
    assert (waiting["kind"], waiting["label"]) == ("running", "running")


def test_a_noted_receive_names_its_topics_until_a_message_comes() -> None:
    waiting = waiting_for(_run(), _log(MessageWaiting(["orders", "refunds"])))
    assert waiting is not None and waiting["kind"] == "message"
    assert waiting["topics"] == ["orders", "refunds"]
    assert waiting_text(waiting) == "waiting for message (topic 'orders', 'refunds')"
    other = waiting_for(_run(), _log(MessageWaiting(["orders"]), MessageReceived("x", RAW)))
    assert other is not None and other["topics"] == ["orders"]  # still waiting on orders
    after = waiting_for(_run(), _log(MessageWaiting(["orders"]), MessageReceived("orders", RAW)))
    assert after is not None and after["kind"] == "message" and after["topics"] is None


def test_a_receive_with_a_timeout_is_a_message_wait_until_its_deadline() -> None:
    until = T0 + dt.timedelta(hours=2)
    waiting = waiting_for(_run(), _log(WaitCreated("1", until), MessageWaiting(["orders"])))
    assert waiting is not None and waiting["kind"] == "message"
    assert waiting["until"] == until.isoformat() and waiting["topics"] == ["orders"]
    # a sleep begun after the note is what the run waits on
    later = waiting_for(_run(), _log(MessageWaiting(["orders"]), WaitCreated("1", until)))
    assert later is not None and later["kind"] == "sleep"


def test_a_requested_cancel_shows_cancelling() -> None:
    assert _kind(HookCreated("1", "t"), CancelRequested()) == "cancelling"


def test_a_run_that_is_not_running_waits_for_nothing() -> None:
    for status in (RunStatus.PENDING, RunStatus.COMPLETED, RunStatus.FAILED,
                   RunStatus.CANCELLED):
        assert waiting_for(_run(status), _log(HookCreated("1", "t"))) is None


# -- on real runs, every world ----------------------------------------------------------
STEP_GATE: dict[str, asyncio.Event] = {}


@workflow(name="wait_sleeper")
async def sleeper() -> str:
    await sleep("1h")
    return "woke"


@workflow(name="wait_hook")
async def hooked(token: str) -> Any:
    return await create_hook(token=token)


@workflow(name="wait_message")
async def messaged() -> Any:
    return await receive(topic="orders")


@workflow(name="wait_parent")
async def parent() -> Any:
    return await sleeper()


@step(name="wait_flaky", max_retries=3)
async def flaky() -> None:
    raise RetryableError("not yet", retry_after="1h")


@workflow(name="wait_retrying")
async def retrying() -> None:
    await flaky()


@step(name="wait_gated")
async def gated(key: str) -> str:
    await STEP_GATE[key].wait()
    return key


@workflow(name="wait_running")
async def running_step(key: str) -> str:
    return await gated(key)


async def _wait_kind(world: Any, run_id: str, kind: str) -> dict[str, Any]:
    last: dict[str, Any] | None = None
    with anyio.fail_after(30):
        while True:
            run = await world.get_run(run_id)
            assert run is not None
            last = await run_waiting(world, run)
            # a running run shows its step once step_started is committed
            if (last is not None and last["kind"] == kind
                    and (kind != "running" or last.get("step_name") is not None)):
                return last
            await anyio.sleep(0.02)


@pytest.mark.parametrize("case", ["sleep", "hook", "message", "child", "retrying",
                                  "running"])
async def test_a_real_waiting_run_says_what_it_waits_for(world: Any, case: str) -> None:
    token = f"tok-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex
    STEP_GATE[key] = asyncio.Event()
    if case == "sleep":
        run = await start(sleeper, world=world)
    elif case == "hook":
        run = await start(hooked, token, world=world)
    elif case == "message":
        run = await start(messaged, world=world)
    elif case == "child":
        run = await start(parent, world=world)
    elif case == "retrying":
        run = await start(retrying, world=world)
    else:
        run = await start(running_step, key, world=world)
    waiting = await _wait_kind(world, run.run_id, case)
    now = world.now()
    if case == "sleep":
        until = dt.datetime.fromisoformat(waiting["until"])
        assert dt.timedelta(minutes=59) < until - now <= dt.timedelta(hours=1)
    elif case == "hook":
        assert waiting["token"] == token
    elif case == "message":
        with anyio.fail_after(30):  # the topics are noted when the run is set aside
            while waiting.get("topics") != ["orders"]:
                await anyio.sleep(0.02)
                record = await world.get_run(run.run_id)
                assert record is not None
                waiting = await run_waiting(world, record) or {}
        await send(run.run_id, {"id": 7}, topic="orders", world=world)
        assert await run.result(timeout=30) == {"id": 7}
    elif case == "child":
        with anyio.fail_after(30):  # created right after child_started is committed
            child = await world.get_run(waiting["child_run_id"])
            while child is None:
                await anyio.sleep(0.02)
                child = await world.get_run(waiting["child_run_id"])
        assert child.parent_run_id == run.run_id
        assert waiting["workflow_name"] == "wait_sleeper"
    elif case == "retrying":
        assert waiting["step_name"] == "wait_flaky"
        assert dt.datetime.fromisoformat(waiting["until"]) > now + dt.timedelta(minutes=59)
    else:
        assert waiting["step_name"] == "wait_gated"
        STEP_GATE[key].set()
        assert await run.result(timeout=30) == key
    if case not in ("message", "running"):
        await run.cancel()
        record = await world.wait_run_finished(run.run_id, timeout=30)
        assert record.status == "cancelled"
        record = await world.get_run(run.run_id)
        assert await run_waiting(world, record) is None


@workflow(name="wait_two_messages")
async def two_messages() -> list[Any]:
    first = await receive(topic="orders")
    await sleeper_step()
    return [first, await receive(topic="orders")]


@step(name="wait_quick")
async def sleeper_step() -> None:
    return None


async def test_a_message_wait_is_noted_once_per_wait_and_replays(world: Any) -> None:
    """Set aside again and again (other input wakes it), a run notes its receive()
    once; after a message, the next wait is noted again; the log replays."""
    from worldflow import check_replay

    run = await start(two_messages, world=world)

    async def notes() -> list[list[str]]:
        return [e.event.topics for e in await world.list_events(run.run_id)
                if isinstance(e.event, MessageWaiting)]

    async def until_noted(count: int) -> None:
        with anyio.fail_after(30):
            while True:
                if len(await notes()) >= count:
                    return
                await anyio.sleep(0.02)

    await until_noted(1)
    for _ in range(3):  # input on another topic wakes the run; it waits on
        await send(run.run_id, "noise", topic="other", world=world)
        await anyio.sleep(0.2)
    assert await notes() == [["orders"]]
    await send(run.run_id, 1, topic="orders", world=world)
    await until_noted(2)
    await check_replay(run.run_id, world=world)
    await send(run.run_id, 2, topic="orders", world=world)
    assert await run.result(timeout=30) == [1, 2]
    assert await notes() == [["orders"], ["orders"]]
