"""`/flow` and `/step`: signatures, malformed and unknown requests, size limits; every
refused request leaves the world exactly as it was."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import msgspec
import pytest

from tests.transports import workflows as wf
from tests.transports.helpers import (
    PREFIX,
    SECRET,
    asgi_client,
    parked_run,
    post_signed,
    signed,
    snapshot,
)
from worldflow import start
from worldflow.core.events import StepCompleted, StepFailed, StepRetrying, decode_event
from worldflow.core.records import NewRun
from worldflow.transports.messages import new_request_id
from worldflow.worlds import create_world


def step_body(step_name: str = "t_add", **changes: Any) -> bytes:
    """A `/step` body (a new request id each time) for run ``run-x`` (make it with
    ``parked_run(world, run_id="run-x")``)."""
    now = dt.datetime.now(dt.UTC).isoformat()
    body: dict[str, Any] = {
        "request_id": new_request_id(), "run_id": "run-x", "workflow_name": "t_remote_steps",
        "correlation_id": "1",
        "step_name": step_name, "attempt": 1, "input": {"args": [2, 3], "kwargs": {}},
        "started_at": now}
    body.update(changes)
    return msgspec.json.encode({k: v for k, v in body.items() if v is not ...})


def flow_body(run_id: Any, **changes: Any) -> bytes:
    body = {"request_id": new_request_id(), "run_id": run_id, **changes}
    return msgspec.json.encode({k: v for k, v in body.items() if v is not ...})


async def test_step_runs_the_step_and_answers_its_outcome(memory_world: Any) -> None:
    await parked_run(memory_world, run_id="run-x")
    async with asgi_client(memory_world) as client:
        response = await post_signed(client, "/step", step_body())
    assert response.status_code == 200
    outcome = decode_event(response.content)
    assert isinstance(outcome, StepCompleted)
    assert (outcome.correlation_id, outcome.step_name, outcome.attempt) == ("1", "t_add", 1)
    assert msgspec.json.decode(outcome.output) == 5


async def test_step_failures_come_back_as_outcomes(memory_world: Any) -> None:
    await parked_run(memory_world, run_id="run-x")
    async with asgi_client(memory_world) as client:
        fatal = await post_signed(client, "/step", step_body("t_fatal", input={"args": []}))
        retry = await post_signed(client, "/step", step_body(input={"args": ["a"]}))
    failed = decode_event(fatal.content)
    assert isinstance(failed, StepFailed) and failed.error.fatal
    assert failed.error.message == "no way"
    assert isinstance(decode_event(retry.content), StepRetrying)  # TypeError: retried


NOW = int(time.time())


@pytest.mark.parametrize(("path", "headers"), [
    ("/step", {}),
    ("/step", {"x-worldflow-timestamp": str(NOW)}),
    ("/step", {"x-worldflow-signature": "sha256=00"}),
    ("/step", "wrong-secret"),
    ("/step", "expired"),
    ("/step", "future"),
    ("/step", "bad-timestamp"),
    ("/step", "tampered"),
    ("/flow", {}),
    ("/flow", "wrong-secret"),
    ("/flow", "expired"),
])
async def test_unsigned_or_badly_signed_requests_are_401_and_change_nothing(
        busy_world: Any, path: str, headers: Any) -> None:
    body = step_body() if path == "/step" else flow_body("x")
    if headers == "wrong-secret":
        headers = signed(body, secret="not-" + SECRET)
    elif headers == "expired":
        headers = signed(body, timestamp=int(time.time()) - 310)
    elif headers == "future":
        headers = signed(body, timestamp=int(time.time()) + 310)
    elif headers == "bad-timestamp":
        headers = signed(body) | {"x-worldflow-timestamp": "12e3"}
    elif headers == "tampered":
        headers = signed(body)
        body = body.replace(b'"attempt":1', b'"attempt":2')
    before = await snapshot(busy_world)
    async with asgi_client(busy_world) as client:
        response = await client.post(PREFIX + path, content=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert await snapshot(busy_world) == before


async def test_server_without_a_secret_refuses_every_signed_request(
        memory_world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKFLOW_SECRET", raising=False)
    async with asgi_client(memory_world, secret=None) as client:
        response = await post_signed(client, "/step", step_body())
    assert response.status_code == 401
    assert "WORKFLOW_SECRET" in response.json()["message"]


async def test_secret_is_read_from_the_environment(memory_world: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKFLOW_SECRET", SECRET)
    await parked_run(memory_world, run_id="run-x")
    async with asgi_client(memory_world, secret=None) as client:
        assert (await post_signed(client, "/step", step_body())).status_code == 200


@pytest.mark.parametrize(("path", "body"), [
    ("/step", b"not json"),
    ("/step", b""),
    ("/step", b"[]"),
    ("/step", b'{"run_id": "r"}'),
    ("/step", step_body(attempt=0)),
    ("/step", step_body(attempt="1")),
    ("/step", step_body(run_id="")),
    ("/step", step_body(started_at="2024-01-01T00:00:00")),  # no time zone
    ("/step", step_body(input=[1, 2])),
    ("/step", step_body(input={"args": {}})),
    ("/step", step_body(input=...)),
    ("/step", b"[" * 100_000),
    ("/flow", b"not json"),
    ("/flow", b"{}"),
    ("/flow", flow_body(5)),
    ("/flow", flow_body("")),
    ("/flow", b'{"request_id": "0123456789", "run_id": "a\\u0000b"}'),
    ("/step", step_body(run_id="a\x00b")),
    ("/step", step_body(request_id=...)),  # a version 1 body: no request id
    ("/step", step_body(request_id="short")),
    ("/step", step_body(request_id="with space " + "x" * 10)),
    ("/step", step_body(request_id=12345678)),
    ("/flow", flow_body("x", request_id=...)),
])
async def test_malformed_requests_are_400_and_change_nothing(busy_world: Any, path: str,
                                                            body: bytes) -> None:
    before = await snapshot(busy_world)
    async with asgi_client(busy_world) as client:
        response = await post_signed(client, path, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"
    assert await snapshot(busy_world) == before


async def test_unknown_step_is_404_and_changes_nothing(busy_world: Any) -> None:
    before = await snapshot(busy_world)
    async with asgi_client(busy_world) as client:
        response = await post_signed(client, "/step", step_body("t_no_such_step"))
    assert response.status_code == 404
    assert response.json()["error"] == "step_not_found"
    assert await snapshot(busy_world) == before


async def test_flow_for_unknown_run_or_workflow_is_404_and_changes_nothing(
        busy_world: Any) -> None:
    run_id = f"run-{uuid.uuid4().hex}"
    await busy_world.create_run(
        NewRun(run_id, "t_not_registered_here", msgspec.Raw(b'{"args":[],"kwargs":{}}'),
               busy_world.now()), lease_owner="another-process", lease_seconds=600)
    before = await snapshot(busy_world)
    async with asgi_client(busy_world) as client:
        unknown_run = await post_signed(client, "/flow", flow_body("no-such-run"))
        unknown_workflow = await post_signed(client, "/flow", flow_body(run_id))
    assert unknown_run.status_code == 404
    assert unknown_run.json()["error"] == "run_not_found"
    assert unknown_workflow.status_code == 404
    assert unknown_workflow.json()["error"] == "workflow_not_found"
    assert await snapshot(busy_world) == before


@pytest.mark.parametrize("path", ["/step", "/flow"])
async def test_oversized_signed_body_is_413_and_changes_nothing(busy_world: Any,
                                                               path: str) -> None:
    body = step_body(input={"args": ["x" * 2000], "kwargs": {}})
    before = await snapshot(busy_world)
    async with asgi_client(busy_world, max_body=1000) as client:
        response = await post_signed(client, path, body)
    assert response.status_code == 413
    assert await snapshot(busy_world) == before


async def test_flow_wakes_this_process_to_work_on_a_run_enqueued_elsewhere(
        tmp_path: Any) -> None:
    path = str(tmp_path / "shared.db")
    enqueuer = create_world("sqlite", path=path)  # opened, not started: it runs nothing
    worker = create_world("sqlite", path=path)
    await enqueuer.open()
    try:
        async with worker:
            run = await start(wf.remote_steps, 3, world=enqueuer)
            async with asgi_client(worker) as client:
                response = await post_signed(client, "/flow", flow_body(run.run_id))
                assert response.status_code == 202
                result = await run.result(timeout=30)
                assert [r["i"] for r in result] == [0, 1, 2, 3]
                again = await post_signed(client, "/flow", flow_body(run.run_id))
                assert (again.status_code, again.json()["status"]) == (200, "completed")
    finally:
        await enqueuer.close()


async def test_flow_on_a_world_that_is_not_started_is_503(tmp_path: Any) -> None:
    world = create_world("memory")
    await world.open()
    await world.create_run(NewRun("r1", "t_remote_steps", msgspec.Raw(b'{"args":[1]}'),
                                  world.now()), lease_owner=None, lease_seconds=30)
    async with asgi_client(world) as client:
        response = await post_signed(client, "/flow", flow_body("r1"))
    assert response.status_code == 503
    await world.close()


async def test_wrong_method_is_405(memory_world: Any) -> None:
    async with asgi_client(memory_world) as client:
        assert (await client.get(PREFIX + "/step")).status_code == 405
        assert (await client.put(PREFIX + "/webhook/x")).status_code == 405


def count_body(label: str, run_id: str, workflow_name: str = "t_remote_steps") -> bytes:
    return step_body("t_count", run_id=run_id, workflow_name=workflow_name,
                     input={"args": [label], "kwargs": {}})


async def test_step_for_a_run_not_in_this_world_is_404_and_never_runs_the_step(
        busy_world: Any) -> None:
    label = uuid.uuid4().hex
    before = await snapshot(busy_world)
    async with asgi_client(busy_world) as client:
        response = await post_signed(client, "/step", count_body(label, "no-such-run"))
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "run_not_found"
    assert wf.COUNTS[label] == 0
    assert await snapshot(busy_world) == before


async def test_step_of_a_workflow_not_registered_here_is_404_and_never_runs_the_step(
        busy_world: Any) -> None:
    label = uuid.uuid4().hex
    run_id = await parked_run(busy_world, "t_not_registered_here")
    before = await snapshot(busy_world)
    async with asgi_client(busy_world) as client:
        response = await post_signed(client, "/step", count_body(
            label, run_id, workflow_name="t_not_registered_here"))
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "workflow_not_found"
    assert "t_not_registered_here" in response.json()["message"]
    assert wf.COUNTS[label] == 0
    assert await snapshot(busy_world) == before


async def test_step_naming_another_workflow_than_its_run_is_404_and_never_runs(
        busy_world: Any) -> None:
    label = uuid.uuid4().hex
    run_id = await parked_run(busy_world, "t_remote_steps")
    before = await snapshot(busy_world)
    async with asgi_client(busy_world) as client:
        response = await post_signed(client, "/step", count_body(
            label, run_id, workflow_name="t_remote_slow"))
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "workflow_not_found"
    assert wf.COUNTS[label] == 0
    assert await snapshot(busy_world) == before


async def test_step_for_a_known_run_runs_the_step(busy_world: Any) -> None:
    label = uuid.uuid4().hex
    run_id = await parked_run(busy_world, "t_remote_steps")
    async with asgi_client(busy_world) as client:
        response = await post_signed(client, "/step", count_body(label, run_id))
    assert response.status_code == 200, response.text
    assert wf.COUNTS[label] == 1


async def test_version_1_body_without_request_id_is_400_and_says_to_upgrade(
        memory_world: Any) -> None:
    label = uuid.uuid4().hex
    run_id = await parked_run(memory_world)
    body = step_body("t_count", run_id=run_id, input={"args": [label]}, request_id=...)
    async with asgi_client(memory_world) as client:
        response = await post_signed(client, "/step", body)
    assert response.status_code == 400
    assert "request_id" in response.json()["message"]
    assert "upgrade" in response.json()["message"]
    assert wf.COUNTS[label] == 0
