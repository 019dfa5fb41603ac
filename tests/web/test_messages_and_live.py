"""The web UI sends messages (and hook payloads typed as JSON text) by POST, and streams
a run's changes as server-sent events; on every world."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

from worldflow import create_hook, receive, start, workflow
from worldflow.cli.waiting import run_waiting
from worldflow.cli.web import app
from worldflow.cli.web.live import run_changes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TOKEN = "csrf-test-token"


@workflow(name="web_receiver")
async def receiver() -> Any:
    return await receive(topic="orders")


@workflow(name="web_hooked")
async def hooked(token: str) -> Any:
    return await create_hook(token=token)


@pytest.fixture
async def http(world: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app(world, csrf_token=TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://ui.test",
                                 headers={"X-CSRF-Token": TOKEN}) as client:
        yield client


async def _waiting(world: Any, run_id: str, kind: str) -> None:
    with anyio.fail_after(30):
        while True:
            record = await world.get_run(run_id)
            waiting = await run_waiting(world, record)
            if waiting is not None and waiting["kind"] == kind:
                return
            await anyio.sleep(0.02)


async def _message_events(world: Any, run_id: str) -> list[Any]:
    return [e for e in await world.list_events(run_id)
            if e.event.__struct_config__.tag == "message_received"]


async def test_a_message_typed_as_json_text_reaches_the_waiting_run(
        world: Any, http: httpx.AsyncClient) -> None:
    run = await start(receiver, world=world)
    await _waiting(world, run.run_id, "message")
    sent = await http.post(f"/api/runs/{run.run_id}/messages",
                           json={"topic": "orders", "json": '{"id": 1, "qty": [2, 3]}'})
    assert sent.status_code == 200, sent.text
    assert sent.json() == {"run_id": run.run_id, "topic": "orders"}
    assert await run.result(timeout=30) == {"id": 1, "qty": [2, 3]}


async def test_a_message_as_a_json_value_is_sent_as_is(
        world: Any, http: httpx.AsyncClient) -> None:
    run = await start(receiver, world=world)
    sent = await http.post(f"/api/runs/{run.run_id}/messages",
                           json={"topic": "orders", "message": ["a", None]})
    assert sent.status_code == 200, sent.text
    assert await run.result(timeout=30) == ["a", None]


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"topic": "orders", "json": '{"id": '}, 400,
     "the message is not valid JSON: Expecting value: line 1 column 8 (char 7)"),
    ({"topic": "orders", "json": 5}, 400, '"json" must be a string of JSON text'),
    ({"topic": "orders"}, 400, 'the body must be a JSON object {"message": ...} or '
                               '{"json": "JSON text"}'),
    ({"topic": "", "message": 1}, 400, "topic must be a non-empty string"),
    ({"topic": 7, "message": 1}, 400, "topic must be a non-empty string"),
    ({"topic": "t" * 201, "message": 1}, 400, "message rejected: topic must be a non-empty "
                                               "string of at most 200 characters"),
])
async def test_a_bad_message_is_400_naming_the_problem_and_sends_nothing(
        world: Any, http: httpx.AsyncClient, body: dict[str, Any], status: int,
        message: str) -> None:
    run = await start(receiver, world=world)
    await _waiting(world, run.run_id, "message")
    answer = await http.post(f"/api/runs/{run.run_id}/messages", json=body)
    assert answer.status_code == status
    assert answer.json()["message"].startswith(message), answer.json()
    await anyio.sleep(0.2)
    assert await world.read_inbox(run.run_id) == []
    assert await _message_events(world, run.run_id) == []
    assert (await run.status()) == "running"


async def test_a_message_needs_the_csrf_token_and_a_live_run(
        world: Any, http: httpx.AsyncClient) -> None:
    run = await start(receiver, world=world)
    url = f"/api/runs/{run.run_id}/messages"
    forged = await http.post(url, json={"message": 1}, headers={"X-CSRF-Token": "guess"})
    assert forged.status_code == 403
    missing = await http.post("/api/runs/no-such-run/messages", json={"message": 1})
    assert missing.status_code == 404
    assert (await http.post(url, json={"topic": "orders", "message": 1})).status_code == 200
    await run.result(timeout=30)
    late = await http.post(url, json={"topic": "orders", "message": 2})
    assert late.status_code == 409
    assert len(await _message_events(world, run.run_id)) == 1


async def test_a_hook_payload_typed_as_json_text_is_checked_then_delivered(
        world: Any, http: httpx.AsyncClient) -> None:
    run = await start(hooked, "web-approve", world=world)
    await _waiting(world, run.run_id, "hook")
    url = f"/api/runs/{run.run_id}/hooks/web-approve"
    bad = await http.post(url, json={"json": "{approved: true}"})
    assert bad.status_code == 400
    assert bad.json()["message"].startswith("the payload is not valid JSON: Expecting "
                                            "property name enclosed in double quotes")
    assert (await run.status()) == "running"
    good = await http.post(url, json={"json": '{"approved": true}'})
    assert good.status_code == 200, good.text
    assert await run.result(timeout=30) == {"approved": True}


# -- server-sent events -------------------------------------------------------------------
def _parse(text: str) -> list[tuple[str, dict[str, Any]]]:
    messages = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            messages.append((fields["event"], json.loads(fields["data"])))
    return messages


async def _never() -> bool:
    return False


async def test_live_stream_of_an_ended_run_says_end_and_closes(
        world: Any, http: httpx.AsyncClient) -> None:
    run = await start(receiver, world=world)
    await http.post(f"/api/runs/{run.run_id}/messages", json={"topic": "orders", "message": 1})
    await run.result(timeout=30)
    with anyio.fail_after(10):
        answer = await http.get(f"/api/runs/{run.run_id}/live")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["cache-control"] == "no-store"
    events = await world.list_events(run.run_id)
    assert _parse(answer.text) == [("end", {
        "seq": events[-1].seq, "status": "completed",
        "types": [e.event.__struct_config__.tag for e in events]})]


async def test_live_stream_sends_each_change_after_the_given_seq_then_the_end(
        world: Any) -> None:
    run = await start(receiver, world=world)
    await _waiting(world, run.run_id, "message")
    last = (await world.list_events(run.run_id))[-1].seq
    received: list[str] = []

    async def follow() -> None:
        async for text in run_changes(world, run.run_id, last, _never, poll_seconds=0.05):
            received.append(text)  # noqa: PERF401 (read while it streams)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.3)
            assert _parse("".join(received)) == []  # nothing new yet: nothing sent
            await world.send_message(run.run_id, "orders", b'"go"')
    messages = _parse("".join(received))
    assert received[0] == "retry: 2000\n\n"
    assert messages[-1][0] == "end"
    assert messages[-1][1]["status"] == "completed"
    types = [t for _, data in messages for t in data["types"]]
    assert types == ["message_received", "run_completed"]
    assert all(kind == "change" for kind, _ in messages[:-1])


async def test_live_stream_closes_when_the_client_leaves_or_its_time_is_up(
        world: Any) -> None:
    run = await start(receiver, world=world)
    await _waiting(world, run.run_id, "message")
    last = (await world.list_events(run.run_id))[-1].seq

    async def gone() -> bool:
        return True

    with anyio.fail_after(5):
        left = [text async for text in run_changes(world, run.run_id, last, gone)]
    assert left == ["retry: 2000\n\n"]
    began = anyio.current_time()
    with anyio.fail_after(5):
        timed = [text async for text in run_changes(world, run.run_id, last, _never,
                                                    poll_seconds=0.05, lifetime_seconds=0.3)]
    assert timed == ["retry: 2000\n\n"]
    assert 0.25 <= anyio.current_time() - began < 4


async def test_live_stream_answers_400_and_404_for_bad_requests(
        world: Any, http: httpx.AsyncClient) -> None:
    run = await start(receiver, world=world)
    bad = await http.get(f"/api/runs/{run.run_id}/live", params={"after": "x"})
    assert bad.status_code == 400
    assert bad.json()["message"] == "after must be a whole number, got 'x'"
    assert (await http.get("/api/runs/nope/live")).status_code == 404
