"""Replays of signed `/step` and `/flow` requests within the signature window: the same
request id runs nothing again and gets the first answer, byte for byte."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import msgspec
import pytest

from tests.transports import workflows as wf
from tests.transports.helpers import (
    BASE,
    PREFIX,
    SECRET,
    asgi_client,
    parked_run,
    signed,
    snapshot,
    wait_until,
)
from tests.transports.test_signed_endpoints import count_body, flow_body
from worldflow.core.events import StepCompleted, decode_event
from worldflow.transports.client import HttpStepRunner, request_flow
from worldflow.transports.deliveries import Answer, DeliveryLog, RequestIdReusedError
from worldflow.transports.http import app
from worldflow.transports.messages import StepRequest


def request_id_of(body: bytes) -> str:
    return str(msgspec.json.decode(body)["request_id"])


async def test_replayed_step_request_runs_the_step_once_and_answers_the_same(
        world: Any) -> None:
    label = uuid.uuid4().hex
    run_id = await parked_run(world)
    body = count_body(label, run_id)
    headers = signed(body)
    async with asgi_client(world) as client:
        first = await client.post(PREFIX + "/step", content=body, headers=headers)
        replayed = await client.post(PREFIX + "/step", content=body, headers=headers)
        resigned = await client.post(PREFIX + "/step", content=body, headers=signed(body))
    assert first.status_code == replayed.status_code == resigned.status_code == 200
    assert first.content == replayed.content == resigned.content
    assert isinstance(decode_event(first.content), StepCompleted)
    assert wf.COUNTS[label] == 1


async def test_concurrent_duplicates_wait_for_the_first_answer(memory_world: Any) -> None:
    label = uuid.uuid4().hex
    wf.GATES[label] = asyncio.Event()
    run_id = await parked_run(memory_world)
    body = count_body(label, run_id)
    headers = signed(body)
    application = app(memory_world, secret=SECRET)
    deliveries: DeliveryLog = application.state.worldflow.deliveries
    transport = httpx.ASGITransport(app=application)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            first = asyncio.ensure_future(
                client.post(PREFIX + "/step", content=body, headers=headers))
            await wait_until(lambda: _true(wf.COUNTS[label] == 1), what="the step body")
            duplicates = [asyncio.ensure_future(
                client.post(PREFIX + "/step", content=body, headers=headers))
                for _ in range(3)]
            await wait_until(lambda: _true(
                deliveries.waiters("step", request_id_of(body)) == 3), what="3 waiters")
            wf.GATES[label].set()
            answers = [await first] + [await d for d in duplicates]
    finally:
        wf.GATES.pop(label, None)
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert wf.COUNTS[label] == 1


async def _true(value: bool) -> bool:
    return value


async def test_replayed_flow_request_gets_the_recorded_answer(memory_world: Any) -> None:
    run_id = f"run-{uuid.uuid4().hex}"
    body = flow_body(run_id)
    headers = signed(body)
    async with asgi_client(memory_world) as client:
        first = await client.post(PREFIX + "/flow", content=body, headers=headers)
        await parked_run(memory_world, run_id=run_id)  # the run exists now
        replayed = await client.post(PREFIX + "/flow", content=body, headers=headers)
        new_body = flow_body(run_id)
        fresh = await client.post(PREFIX + "/flow", content=new_body, headers=signed(new_body))
    assert (first.status_code, replayed.status_code) == (404, 404)
    assert first.content == replayed.content  # answered from the record, not looked up
    assert fresh.status_code == 202  # a new delivery is looked at afresh


async def test_refusal_after_decoding_is_recorded_like_any_answer(busy_world: Any) -> None:
    label = uuid.uuid4().hex
    body = count_body(label, "run-made-later")
    headers = signed(body)
    async with asgi_client(busy_world) as client:
        first = await client.post(PREFIX + "/step", content=body, headers=headers)
        await parked_run(busy_world, run_id="run-made-later")
        replayed = await client.post(PREFIX + "/step", content=body, headers=headers)
    assert first.status_code == replayed.status_code == 404
    assert first.content == replayed.content
    assert wf.COUNTS[label] == 0


async def test_request_id_reused_for_another_body_is_409_and_runs_nothing(
        memory_world: Any) -> None:
    label, other = uuid.uuid4().hex, uuid.uuid4().hex
    run_id = await parked_run(memory_world)
    body = count_body(label, run_id)
    decoded = msgspec.json.decode(body)
    decoded["input"]["args"] = [other]
    forged = msgspec.json.encode(decoded)
    async with asgi_client(memory_world) as client:
        first = await client.post(PREFIX + "/step", content=body, headers=signed(body))
        before = await snapshot(memory_world)
        reused = await client.post(PREFIX + "/step", content=forged, headers=signed(forged))
    assert first.status_code == 200
    assert reused.status_code == 409, reused.text
    assert reused.json()["error"] == "request_id_reused"
    assert (wf.COUNTS[label], wf.COUNTS[other]) == (1, 0)
    assert await snapshot(memory_world) == before


async def test_each_delivery_attempt_of_the_runner_has_a_new_request_id(
        memory_world: Any) -> None:
    seen: list[StepRequest] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(msgspec.json.decode(request.content, type=StepRequest))
        return httpx.Response(503, json={"error": "busy", "message": "later"})

    from tests.transports.test_step_runner import call_args

    runner = HttpStepRunner(BASE, SECRET, transport=httpx.MockTransport(answer))
    try:
        await runner(*call_args("t_add", [1, 2]))
        await runner(*call_args("t_add", [1, 2]))
    finally:
        await runner.aclose()
    assert len({s.request_id for s in seen}) == 2


async def test_request_flow_sends_a_signed_flow_with_a_new_id(memory_world: Any) -> None:
    run_id = await parked_run(memory_world)
    transport = httpx.ASGITransport(app=app(memory_world, secret=SECRET))
    first = await request_flow(BASE, run_id, SECRET, transport=transport)
    second = await request_flow(BASE, run_id, SECRET, transport=transport)
    missing = await request_flow(BASE, "no-such-run", SECRET, transport=transport)
    assert (first.status_code, second.status_code, missing.status_code) == (202, 202, 404)


# -- the record itself ----------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answering(status: int, runs: list[int]) -> Any:
    async def deliver() -> Answer:
        runs.append(status)
        return Answer(status, f"answer {len(runs)}".encode())
    return deliver


async def test_an_answer_is_kept_until_it_expires() -> None:
    clock = Clock()
    log = DeliveryLog(clock=clock)
    runs: list[int] = []
    first = await log.once("step", "id-1", b"d", 300, answering(200, runs))
    clock.now += 299
    again = await log.once("step", "id-1", b"d", 300, answering(200, runs))
    assert (first, again, runs) == (Answer(200, b"answer 1"), Answer(200, b"answer 1"), [200])
    clock.now += 2
    later = await log.once("step", "id-1", b"d", 300, answering(200, runs))
    assert later == Answer(200, b"answer 2")


async def test_the_record_is_bounded_least_recently_used_first() -> None:
    log = DeliveryLog(3, clock=Clock())
    runs: list[int] = []
    for request_id in ("a", "b", "c"):
        await log.once("step", request_id, b"d", 300, answering(200, runs))
    await log.once("step", "a", b"d", 300, answering(200, runs))  # used: kept
    await log.once("step", "d", b"d", 300, answering(200, runs))  # "b" goes
    assert len(log) == 3 and len(runs) == 4
    await log.once("step", "a", b"d", 300, answering(200, runs))
    await log.once("step", "c", b"d", 300, answering(200, runs))
    assert len(runs) == 4
    await log.once("step", "b", b"d", 300, answering(200, runs))
    assert len(runs) == 5


async def test_503_and_failed_deliveries_are_not_recorded() -> None:
    log = DeliveryLog(clock=Clock())
    runs: list[int] = []
    assert (await log.once("flow", "x", b"d", 300, answering(503, runs))).status == 503
    assert (await log.once("flow", "x", b"d", 300, answering(202, runs))).status == 202
    assert runs == [503, 202]

    async def broken() -> Answer:
        raise OSError("storage went away")

    with pytest.raises(OSError):
        await log.once("step", "y", b"d", 300, broken)
    assert (await log.once("step", "y", b"d", 300, answering(200, runs))).status == 200


async def test_a_waiting_duplicate_runs_it_when_the_first_delivery_fails() -> None:
    log = DeliveryLog(clock=Clock())
    gate = asyncio.Event()

    async def fails_later() -> Answer:
        await gate.wait()
        raise OSError("boom")

    first = asyncio.ensure_future(log.once("step", "z", b"d", 300, fails_later))
    await asyncio.sleep(0)
    runs: list[int] = []
    duplicate = asyncio.ensure_future(log.once("step", "z", b"d", 300, answering(200, runs)))
    await wait_until(lambda: _true(log.waiters("step", "z") == 1), what="the waiter")
    gate.set()
    with pytest.raises(OSError):
        await first
    assert (await duplicate).status == 200 and runs == [200]


async def test_same_id_with_another_digest_raises() -> None:
    log = DeliveryLog(clock=Clock())
    await log.once("step", "id", b"one", 300, answering(200, []))
    with pytest.raises(RequestIdReusedError):
        await log.once("step", "id", b"two", 300, answering(200, []))
