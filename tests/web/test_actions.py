"""The web UI acts: cancel, retry and hook payloads by POST (with the CSRF token), the
Host check against DNS rebinding, and the auth token; on a started testing world."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from worldflow import FatalError, create_hook, sleep, start, step, workflow
from worldflow.cli.errors import CliError
from worldflow.cli.web import app
from worldflow.cli.web.server import allowed_hosts, serve_web
from worldflow.testing import testing_world

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from worldflow.testing import TestingWorld

TOKEN = "csrf-test-token"


@workflow
async def ui_sleeper() -> str:
    await sleep("1d")
    return "woke"


@step(max_retries=0)
async def ui_broken() -> None:
    raise FatalError("broken on purpose")


@workflow
async def ui_fails() -> None:
    await ui_broken()


@workflow
async def ui_waits_for_approval(token: str) -> Any:
    return await create_hook(token=token)


@pytest.fixture
async def world() -> AsyncIterator[TestingWorld]:
    async with testing_world(auto_skip=False) as w:
        yield w


def _client(ui: Any, host: str = "ui.test", **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=ui), base_url=f"http://{host}",
                             headers=headers)


async def test_cancel_with_the_csrf_token_cancels_a_sleeping_run(world: TestingWorld) -> None:
    run = await start(ui_sleeper)
    await world.settle()
    async with _client(app(world, csrf_token=TOKEN)) as http:
        page = await http.get(f"/runs/{run.run_id}")
        token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
        assert token is not None and token.group(1) == TOKEN
        assert 'id="cancel-run"' in page.text
        response = await http.post(f"/api/runs/{run.run_id}/cancel", json={},
                                   headers={"X-CSRF-Token": TOKEN})
        assert response.status_code == 200, response.text
        assert response.json() == {"run_id": run.run_id, "cancelled": True}
    await world.settle()
    assert (await run.status()).value == "cancelled"


@pytest.mark.parametrize("headers", [{}, {"X-CSRF-Token": "guessed"}, {"X-CSRF-Token": ""}])
async def test_post_without_a_valid_csrf_token_is_403(world: TestingWorld,
                                                      headers: dict[str, str]) -> None:
    run = await start(ui_sleeper)
    async with _client(app(world, csrf_token=TOKEN)) as http:
        response = await http.post(f"/api/runs/{run.run_id}/cancel", json={},
                                   headers=headers)
    assert response.status_code == 403
    assert "CSRF" in response.text
    await world.settle()
    assert (await run.status()).value == "running"


async def test_retry_starts_a_failed_run_again_and_refuses_a_live_one(
        world: TestingWorld) -> None:
    failed = await start(ui_fails)
    live = await start(ui_sleeper)
    await world.settle()
    assert (await failed.status()).value == "failed"
    async with _client(app(world, csrf_token=TOKEN), **{"X-CSRF-Token": TOKEN}) as http:
        response = await http.post(f"/api/runs/{failed.run_id}/retry", json={})
        assert response.status_code == 200, response.text
        assert response.json() == {"run_id": f"{failed.run_id}-retry1",
                                   "retry_of": failed.run_id}
        refused = await http.post(f"/api/runs/{live.run_id}/retry", json={})
        assert refused.status_code == 409
        missing = await http.post("/api/runs/nope/retry", json={})
        assert missing.status_code == 404


async def test_hook_payload_is_validated_and_delivered(world: TestingWorld) -> None:
    run = await start(ui_waits_for_approval, "approve-42")
    await world.settle()
    url = f"/api/runs/{run.run_id}/hooks/approve-42"
    async with _client(app(world, csrf_token=TOKEN), **{"X-CSRF-Token": TOKEN}) as http:
        page = await http.get(f"/runs/{run.run_id}")
        assert 'class="hook-form json-form"' in page.text
        not_json = await http.post(url, content=b"{oops",
                                   headers={"Content-Type": "application/json"})
        assert not_json.status_code == 400
        assert "not valid JSON" in not_json.json()["message"]
        no_payload = await http.post(url, json={"approved": True})
        assert no_payload.status_code == 400
        form = await http.post(url, data={"payload": "{}"})
        assert form.status_code == 400  # JSON only
        unknown = await http.post(f"/api/runs/{run.run_id}/hooks/other", json={"payload": 1})
        assert unknown.status_code == 404
        sent = await http.post(url, json={"payload": {"approved": True}})
        assert sent.status_code == 200, sent.text
    assert await run.result(timeout=5) == {"approved": True}


async def test_a_foreign_host_header_is_400_even_for_reads(world: TestingWorld) -> None:
    run = await start(ui_sleeper)
    ui = app(world, allowed_hosts=allowed_hosts("127.0.0.1", 3456), csrf_token=TOKEN)
    async with _client(ui, host="evil.example") as http:
        for path in ("/", f"/runs/{run.run_id}", "/api/runs", f"/api/runs/{run.run_id}"):
            response = await http.get(path)
            assert response.status_code == 400, path
            assert run.run_id not in response.text
        post = await http.post(f"/api/runs/{run.run_id}/cancel", json={},
                               headers={"X-CSRF-Token": TOKEN})
        assert post.status_code == 400
    for host in ("127.0.0.1:3456", "localhost:3456"):
        async with _client(ui, host=host) as http:
            assert (await http.get(f"/api/runs/{run.run_id}")).status_code == 200
    async with _client(ui, host="127.0.0.1:9999") as http:
        assert (await http.get("/api/runs")).status_code == 400


async def test_auth_token_by_bearer_or_by_cookie_after_opening_with_it(
        world: TestingWorld) -> None:
    ui = app(world, auth_token="s3cret", csrf_token=TOKEN)
    async with _client(ui) as http:
        assert (await http.get("/api/runs")).status_code == 401
        assert (await http.get("/", params={"token": "nope"})).status_code == 401
        assert (await http.get("/api/runs",
                               headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await http.get("/api/runs",
                               headers={"Authorization": "Bearer s3cret"})).status_code == 200
        opened = await http.get("/", params={"token": "s3cret", "status": "failed"})
        assert opened.status_code == 303
        assert opened.headers["location"] == "/?status=failed"
        assert "HttpOnly" in opened.headers["set-cookie"]
        assert (await http.get("/api/runs")).status_code == 200  # the cookie now


async def test_binding_beyond_loopback_needs_an_auth_token(world: TestingWorld) -> None:
    with pytest.raises(CliError, match="--auth-token"):
        await serve_web(world, "test", port=0, host="0.0.0.0")
