"""Property-based tests of request decoding: whatever arrives, the app answers without
a server error, and no run is changed except by a valid delivery to its webhook."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.transports import workflows as wf
from tests.transports.helpers import (
    PREFIX,
    asgi_client,
    signed,
    snapshot,
    wait_webhook_ready,
)
from worldflow import WebhookRequest, start

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)
request_ids = st.uuids().map(lambda u: u.hex) | json_values
step_fields = st.fixed_dictionaries({}, optional={
    "request_id": request_ids, "run_id": json_values, "workflow_name": json_values,
    "correlation_id": json_values,
    "step_name": st.sampled_from(["t_add", "t_where", "nope"]) | json_values,
    "attempt": st.integers() | json_values,
    "input": st.fixed_dictionaries({}, optional={"args": json_values,
                                                 "kwargs": json_values}) | json_values,
    "started_at": st.datetimes().map(str) | st.text(),
})
flow_fields = st.fixed_dictionaries({}, optional={"request_id": request_ids,
                                                  "run_id": json_values})
bodies = (st.binary(max_size=300) | json_values.map(msgspec.json.encode)
          | step_fields.map(msgspec.json.encode) | flow_fields.map(msgspec.json.encode))
header_names = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).map(
    lambda name: "x-" + name)
header_values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
headers = st.dictionaries(header_names, header_values, max_size=5)
signature_headers = st.fixed_dictionaries({}, optional={
    "x-worldflow-timestamp": st.integers(-10, 10**13).map(str) | header_values,
    "x-worldflow-signature": header_values.map(lambda v: "sha256=" + v) | header_values,
})


@pytest.fixture
async def waiting_run(memory_world: Any) -> tuple[Any, str, str]:
    """A run waiting on a webhook: (world, run_id, token)."""
    token = f"wh-{uuid.uuid4().hex}"
    run = await start(wf.webhook_many, token, world=memory_world)
    await wait_webhook_ready(memory_world, token)
    return memory_world, run.run_id, token


@SETTINGS
@given(path=st.sampled_from(["/step", "/flow"]), body=bodies, sign=st.booleans(),
       extra=signature_headers | headers)
async def test_signed_endpoints_never_fail_and_change_nothing(
        waiting_run: tuple[Any, str, str], path: str, body: bytes, sign: bool,
        extra: dict[str, str]) -> None:
    world, _, _ = waiting_run
    before = await snapshot(world)
    request_headers = signed(body) if sign else {}
    request_headers.update(extra)
    async with asgi_client(world) as client:
        response = await client.post(PREFIX + path, content=body, headers=request_headers)
    assert response.status_code < 500, response.text
    if not sign or set(extra) & {"x-worldflow-timestamp", "x-worldflow-signature"}:
        assert response.status_code == 401, response.text
    else:
        assert response.status_code in (200, 400, 404), response.text
    assert await snapshot(world) == before


@SETTINGS
@given(token=st.text(min_size=1, max_size=80), method=st.sampled_from(["GET", "POST"]),
       body=st.binary(max_size=200), request_headers=headers)
async def test_requests_to_other_tokens_never_fail_and_change_nothing(
        waiting_run: tuple[Any, str, str], token: str, method: str, body: bytes,
        request_headers: dict[str, str]) -> None:
    world, _, real_token = waiting_run
    if token == real_token:
        return
    before = await snapshot(world)
    async with asgi_client(world) as client:
        response = await client.request(method, f"{PREFIX}/webhook/{_quote(token)}",
                                         content=body or None, headers=request_headers)
    assert response.status_code in (404, 405), response.text
    assert await snapshot(world) == before


def _quote(token: str) -> str:
    import urllib.parse

    return urllib.parse.quote(token, safe="")


@SETTINGS
@given(method=st.sampled_from(["GET", "POST"]), body=st.binary(max_size=500),
       request_headers=headers,
       query=st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=10),
                             max_size=4))
async def test_any_webhook_request_is_delivered_exactly(
        waiting_run: tuple[Any, str, str], method: str, body: bytes,
        request_headers: dict[str, str], query: dict[str, str]) -> None:
    world, run_id, token = waiting_run
    if method == "GET":
        body = b""
    request_headers = {**request_headers, "x-example": uuid.uuid4().hex}
    async with asgi_client(world) as client:
        response = await client.request(method, f"{PREFIX}/webhook/{token}", params=query,
                                        content=body or None, headers=request_headers)
    assert response.status_code == 202, response.text
    # the run took exactly this request as its next payload
    inbox = await world.read_inbox(run_id)
    events = await world.list_events(run_id)
    payloads = [m.payload for m in inbox] + [e.event.payload for e in events
                                              if e.event_type == "hook_received"]
    delivered = [msgspec.json.decode(p, type=WebhookRequest) for p in payloads]
    (request,) = [r for r in delivered
                  if r.headers.get("x-example") == request_headers["x-example"]]
    assert (request.method, request.body, request.query) == (method, body, query)
    for name, value in request_headers.items():
        assert request.headers[name] == value


async def call_asgi(application: Any, method: str, path: str, query: bytes,
                    raw_headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> int:
    """Drive the ASGI app with a hand-made request (bytes no HTTP client would send)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path,
             "raw_path": path.encode("utf-8", "surrogateescape"), "query_string": query,
             "root_path": "", "headers": raw_headers, "client": ("127.0.0.1", 1),
             "server": ("testserver", 80)}
    messages = [{"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
                for i, chunk in enumerate(chunks or [b""])]
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await application(scope, receive, send)
    return status[0]


raw_bytes = st.binary(max_size=40)


@SETTINGS
@given(method=st.sampled_from(["GET", "POST", "HEAD", "PUT", "OPTIONS", "GARBAGE"]),
       target=st.sampled_from(["/flow", "/step", "/webhook/", "/webhook/real", "/other"]),
       suffix=st.text(max_size=20), query=raw_bytes,
       raw_headers=st.lists(st.tuples(raw_bytes.map(bytes.lower), raw_bytes), max_size=6),
       chunks=st.lists(st.binary(max_size=50), max_size=4))
async def test_raw_asgi_requests_never_fail_and_change_nothing(
        waiting_run: tuple[Any, str, str], method: str, target: str, suffix: str,
        query: bytes, raw_headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> None:
    from worldflow.transports.http import app

    world, _, token = waiting_run
    path = PREFIX + target.replace("real", token) + suffix
    before = await snapshot(world)
    status = await call_asgi(app(world, secret="s", max_body=100), method, path, query,
                             raw_headers, chunks)
    assert status < 500
    if status != 202:
        assert await snapshot(world) == before
