"""Helpers of the transport tests: signed requests, and a snapshot of a world's state."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from worldflow.core.records import NewRun
from worldflow.transports.http import app
from worldflow.transports.signing import signature_headers

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SECRET = "test-secret-" + "x" * 20
BASE = "http://testserver"
PREFIX = "/.well-known/workflow/v1"


@contextlib.asynccontextmanager
async def asgi_client(world: Any, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to `app(world)` in this process."""
    options.setdefault("secret", SECRET)
    transport = httpx.ASGITransport(app=app(world, **options))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


def signed(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    headers = signature_headers(body, secret.encode(), timestamp)
    headers["content-type"] = "application/json"
    return headers


async def post_signed(client: httpx.AsyncClient, path: str, body: bytes,
                      **kwargs: Any) -> httpx.Response:
    return await client.post(PREFIX + path, content=body, headers=signed(body, **kwargs))


async def parked_run(world: Any, workflow: str = "t_remote_steps",
                     run_id: str | None = None) -> str:
    """Create a run of `workflow` leased to another process (so this process's engine
    leaves it alone): a run that `/step` requests can name. Returns its id."""
    run_id = run_id or f"run-{uuid.uuid4().hex}"
    await world.create_run(NewRun(run_id, workflow, msgspec.Raw(b'{"args":[],"kwargs":{}}'),
                                  world.now()), lease_owner="another-process",
                           lease_seconds=600)
    return run_id


async def snapshot(world: Any) -> dict[str, Any]:
    """Everything a request could change: runs, their logs, steps, hooks, inboxes,
    streams (compared before and after a refused request)."""
    runs = (await world.list_runs(limit=10_000)).items
    state: dict[str, Any] = {"hooks": sorted((h.token, h.run_id, h.status)
                                             for h in await world.list_hooks())}
    for run in runs:
        state[run.run_id] = {
            "run": (run.status, run.output, run.error, run.updated_at),
            "events": [(e.seq, e.event) for e in await world.list_events(run.run_id)],
            "steps": await world.list_steps(run.run_id),
            "inbox": [(m.kind, m.token, m.payload) for m in await world.read_inbox(run.run_id)],
            "streams": await world.list_streams(run.run_id),
        }
    return state


async def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll the async `predicate` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_webhook_ready(world: Any, token: str) -> str:
    """Wait until webhook `token` exists and its run is idle (no step running);
    return the run id."""

    async def ready() -> str | None:
        hook = await world.get_hook(token)
        if hook is None or hook.status != "active":
            return None
        steps = await world.list_steps(hook.run_id)
        if any(s.status != "completed" for s in steps):
            return None
        events = await world.list_events(hook.run_id)
        if events[-1].event_type not in ("hook_created", "step_completed"):
            return None
        return str(hook.run_id)

    return str(await wait_until(ready, what=f"webhook {token}"))
