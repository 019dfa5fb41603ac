"""Webhooks over the ASGI app: delivery, the response, unknown and ended tokens."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import msgspec
import pytest

from tests.transports import workflows as wf
from tests.transports.helpers import (
    PREFIX,
    asgi_client,
    snapshot,
    wait_until,
    wait_webhook_ready,
)
from worldflow import NotInWorkflowError, WebhookRequest, create_webhook, start
from worldflow.transports.webhooks import (
    WebhookResponse,
    find_webhook_response,
    webhook_url,
)


def token() -> str:
    return f"wh-{uuid.uuid4().hex}"


async def test_webhook_post_delivers_method_headers_query_and_body_and_answers_202(
        world: Any) -> None:
    tok = token()
    run = await start(wf.webhook_once, tok, world=world)
    await wait_webhook_ready(world, tok)
    async with asgi_client(world) as client:
        response = await client.post(f"{PREFIX}/webhook/{tok}?a=1&b=two&a=3",
                                     content=b"\x00\xffraw bytes",
                                     headers={"X-Partner": "acme", "Content-Type": "x/y"})
    assert response.status_code == 202
    assert response.json() == {"status": "accepted"}
    result = await run.result(timeout=30)
    assert result["is_request"] is True
    request = msgspec.convert(result["request"], WebhookRequest)
    assert request.method == "POST"
    assert request.body == b"\x00\xffraw bytes"
    assert request.headers["x-partner"] == "acme"
    assert request.headers["content-type"] == "x/y"
    assert request.query == {"a": "3", "b": "two"}
    assert request.query_string == "a=1&b=two&a=3"
    assert result["token"] == tok
    assert result["url"] == webhook_url(tok)


async def test_webhook_get_is_delivered_too(memory_world: Any) -> None:
    tok = token()
    run = await start(wf.webhook_once, tok, world=memory_world)
    await wait_webhook_ready(memory_world, tok)
    async with asgi_client(memory_world) as client:
        response = await client.get(f"{PREFIX}/webhook/{tok}", params={"q": "é x"})
    assert response.status_code == 202
    request = msgspec.convert((await run.result(timeout=30))["request"], WebhookRequest)
    assert (request.method, request.query, request.body) == ("GET", {"q": "é x"}, b"")


async def test_workflow_gets_a_webhook_request_with_json_and_text(world: Any) -> None:
    tok = token()
    run = await start(wf.webhook_json, tok, world=world)
    await wait_webhook_ready(world, tok)
    async with asgi_client(world) as client:
        response = await client.post(f"{PREFIX}/webhook/{tok}", params={"id": "7"},
                                     json={"event": "paid", "amount": 12.5},
                                     headers={"x-partner": "acme"})
    assert response.status_code == 202
    assert await run.result(timeout=30) == {
        "method": "POST", "text": '{"event":"paid","amount":12.5}',
        "json": {"event": "paid", "amount": 12.5}, "query": {"id": "7"}, "header": "acme"}


async def test_generated_webhook_token_is_unguessable_and_url_uses_base_url(
        memory_world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKFLOW_BASE_URL", "https://example.com/app/")
    run = await start(wf.webhook_once, None, world=memory_world)
    hooks = await wait_hooks(memory_world, run.run_id)
    tok = hooks[0].token
    assert len(tok) >= 32
    await wait_webhook_ready(memory_world, tok)
    async with asgi_client(memory_world) as client:
        assert (await client.post(f"{PREFIX}/webhook/{tok}")).status_code == 202
    result = await run.result(timeout=30)
    assert result["url"] == f"https://example.com/app/.well-known/workflow/v1/webhook/{tok}"


async def wait_hooks(world: Any, run_id: str) -> list[Any]:
    async def hooks() -> list[Any]:
        return list(await world.list_hooks(run_id))

    return list(await wait_until(hooks, what="hook"))


@pytest.mark.parametrize("tok", ["order/1 with space?&#", ".", "..", "a%2Fb", "é/../x"])
async def test_any_token_round_trips_through_its_url(memory_world: Any, tok: str) -> None:
    run = await start(wf.webhook_once, tok, world=memory_world)
    await wait_webhook_ready(memory_world, tok)
    url = webhook_url(tok)
    async with asgi_client(memory_world) as client:
        response = await client.post(url.replace("http://127.0.0.1:3001", ""))
    assert response.status_code == 202
    assert (await run.result(timeout=30))["token"] == tok


async def test_many_requests_arrive_in_order_none_lost(world: Any) -> None:
    tok = token()
    run = await start(wf.webhook_many, tok, world=world)
    await wait_webhook_ready(world, tok)
    async with asgi_client(world) as client:
        for i in range(5):
            response = await client.post(f"{PREFIX}/webhook/{tok}", content=str(i).encode())
            assert response.status_code == 202
        await client.post(f"{PREFIX}/webhook/{tok}", headers={"x-stop": "1"})
    received = await run.result(timeout=30)
    assert [msgspec.convert(r, WebhookRequest).body for r in received] == [
        b"0", b"1", b"2", b"3", b"4"]


async def test_workflow_chooses_the_response_at_creation(world: Any) -> None:
    tok = token()
    run = await start(wf.webhook_reply, tok, world=world)
    await wait_webhook_ready(world, tok)
    async with asgi_client(world) as client:
        response = await client.post(f"{PREFIX}/webhook/{tok}", content=b"hello")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert response.headers["x-reply"] == "yes"
    assert response.headers["content-type"] == "application/json"
    assert await run.result(timeout=30) == "hello"
    assert await run.steps() == []  # a webhook is a hook: it makes no step
    [hook] = await world.list_hooks(run.run_id)
    assert await find_webhook_response(world, hook) == WebhookResponse(
        200, {"x-reply": "yes", "content-type": "application/json"}, b'{"ok":true}')


async def test_unknown_token_is_404_and_changes_nothing(world: Any) -> None:
    tok = token()
    await start(wf.webhook_once, tok, world=world)
    await wait_webhook_ready(world, tok)
    before = await snapshot(world)
    async with asgi_client(world) as client:
        for path in (f"webhook/{token()}", "webhook/" + "z" * 600, "webhook/a%00b"):
            response = await client.post(f"{PREFIX}/{path}", content=b"{}")
            assert response.status_code == 404
            assert response.json()["error"] == "webhook_not_found"
        assert (await client.head(f"{PREFIX}/webhook/{token()}")).status_code == 404
    assert await snapshot(world) == before


async def test_plain_hook_is_not_reachable_as_a_webhook(world: Any) -> None:
    tok = token()
    run = await start(wf.plain_hook, tok, world=world)
    await wait_webhook_ready(world, tok)  # the run is idle: it writes nothing meanwhile
    hook = await world.get_hook(tok)
    assert await find_webhook_response(world, hook) is None
    before = await snapshot(world)
    async with asgi_client(world) as client:
        response = await client.post(f"{PREFIX}/webhook/{tok}", content=b"{}")
    assert response.status_code == 404
    assert await snapshot(world) == before
    assert await run.status() != "completed"
    await run.cancel()


async def test_webhook_of_an_ended_run_is_410_and_changes_nothing(world: Any) -> None:
    tok = token()
    run = await start(wf.webhook_once, tok, world=world)
    await wait_webhook_ready(world, tok)
    async with asgi_client(world) as client:
        assert (await client.post(f"{PREFIX}/webhook/{tok}")).status_code == 202
        await run.result(timeout=30)
        before = await snapshot(world)
        response = await client.post(f"{PREFIX}/webhook/{tok}", content=b"late")
        assert response.status_code == 410
        assert "ended" in response.json()["message"]
    assert await snapshot(world) == before


async def test_head_checks_a_webhook_without_delivering(memory_world: Any) -> None:
    tok = token()
    await start(wf.webhook_once, tok, world=memory_world)
    await wait_webhook_ready(memory_world, tok)
    before = await snapshot(memory_world)
    async with asgi_client(memory_world) as client:
        assert (await client.head(f"{PREFIX}/webhook/{tok}")).status_code == 202
    assert await snapshot(memory_world) == before


async def test_oversized_webhook_body_is_413_and_nothing_is_stored(world: Any) -> None:
    tok = token()
    await start(wf.webhook_once, tok, world=world)
    await wait_webhook_ready(world, tok)
    before = await snapshot(world)

    async def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 100

    async with asgi_client(world, max_body=1000) as client:
        url = f"{PREFIX}/webhook/{tok}"
        assert (await client.post(url, content=b"x" * 1001)).status_code == 413
        assert (await client.post(url, content=chunks())).status_code == 413  # no length
        lying = await client.send(client.build_request(
            "POST", url, content=b"y" * 2000, headers={"content-length": "10"}))
        assert lying.status_code == 413
        bad = await client.post(url, content=b"x", headers={"content-length": "nope"})
        assert bad.status_code == 400
    assert await snapshot(world) == before


async def test_default_limit_is_one_mebibyte(memory_world: Any) -> None:
    tok = token()
    run = await start(wf.webhook_once, tok, world=memory_world)
    await wait_webhook_ready(memory_world, tok)
    async with asgi_client(memory_world) as client:
        url = f"{PREFIX}/webhook/{tok}"
        assert (await client.post(url, content=b"x" * (1024 * 1024 + 1))).status_code == 413
        assert (await client.post(url, content=b"x" * (1024 * 1024))).status_code == 202
    request = msgspec.convert((await run.result(timeout=30))["request"], WebhookRequest)
    assert len(request.body) == 1024 * 1024


def test_create_webhook_outside_a_workflow_raises() -> None:
    with pytest.raises(NotInWorkflowError, match="create_webhook"):
        create_webhook()


@pytest.mark.parametrize(("respond_with", "expected"), [
    (None, WebhookResponse(202, {"content-type": "application/json"}, b'{"status":"accepted"}')),
    (204, WebhookResponse(204, {}, b"")),
    ((200, "ok"), WebhookResponse(200, {"content-type": "text/plain; charset=utf-8"}, b"ok")),
    ((201, b"\x01", {"Content-Type": "x/y"}), WebhookResponse(201, {"content-type": "x/y"},
                                                               b"\x01")),
    ((200, [1]), WebhookResponse(200, {"content-type": "application/json"}, b"[1]")),
    ((200, "", {"Content-Length": "99", "X-A": "b"}),
     WebhookResponse(200, {"x-a": "b", "content-type": "text/plain; charset=utf-8"}, b"")),
])
def test_respond_with_forms(respond_with: Any, expected: WebhookResponse) -> None:
    from worldflow.transports.webhooks import _response

    assert _response(respond_with) == expected


@pytest.mark.parametrize("respond_with", [99, 600, True, "200", (200, "a", {"k": 1}),
                                          (1, 2, 3, 4)])
def test_bad_respond_with_is_refused_at_creation(respond_with: Any) -> None:
    from worldflow.transports.webhooks import _response

    with pytest.raises((ValueError, TypeError)):
        _response(respond_with)


def test_webhook_request_text_uses_charset_and_json_validates() -> None:
    request = WebhookRequest("POST", {"content-type": "text/plain; charset=latin-1"},
                             body="café".encode("latin-1"))
    assert request.text() == "café"
    assert WebhookRequest("POST", body=b'{"a": 1}').json() == {"a": 1}
    with pytest.raises(msgspec.ValidationError):
        WebhookRequest("POST", body=b'{"a": 1}').json(list[int])
    with pytest.raises(ValueError):
        WebhookRequest("POST", body=b"not json").json()


async def test_webhook_app_mounts_under_a_prefix(memory_world: Any) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from worldflow.transports.http import app

    tok = token()
    run = await start(wf.webhook_once, tok, world=memory_world)
    await wait_webhook_ready(memory_world, tok)
    outer = Starlette(routes=[Mount("/api", app=app(memory_world))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=outer),
                                 base_url="http://x") as client:
        response = await client.post(f"/api{PREFIX}/webhook/{tok}", content=b"m")
    assert response.status_code == 202
    assert (await run.result(timeout=30))["request"]["body"] == "bQ=="  # base64 of b"m"
