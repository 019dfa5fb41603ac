"""Workflows and steps of the transport tests (names start with `t_`: they are global).

Imported by the tests and by the subprocesses of the two-process tests.
"""

from __future__ import annotations

import asyncio
import collections
import os
from typing import Any

from worldflow import (
    FatalError,
    WebhookRequest,
    create_hook,
    create_webhook,
    step,
    workflow,
)
from worldflow.core.context import step_context


@workflow(name="t_webhook_once")
async def webhook_once(token: str | None) -> dict[str, Any]:
    wh = create_webhook(token)
    request = await wh
    return {"token": wh.token, "url": wh.url, "is_request": isinstance(request, WebhookRequest),
            "request": request}


@workflow(name="t_webhook_json")
async def webhook_json(token: str) -> dict[str, Any]:
    request = await create_webhook(token)
    return {"method": request.method, "text": request.text(), "json": request.json(),
            "query": request.query, "header": request.headers.get("x-partner")}


@workflow(name="t_webhook_many")
async def webhook_many(token: str) -> list[WebhookRequest]:
    """Collects every request until one carries an ``x-stop`` header."""
    received = []
    async for request in create_webhook(token):
        if "x-stop" in request.headers:
            break
        received.append(request)
    return received


@workflow(name="t_webhook_reply")
async def webhook_reply(token: str) -> str:
    request = await create_webhook(token, respond_with=(200, {"ok": True}, {"x-reply": "yes"}))
    return request.text()


@workflow(name="t_plain_hook")
async def plain_hook(token: str) -> Any:
    return await create_hook(token)


@step(name="t_add")
async def add(a: int, b: int) -> int:
    return a + b


@step(name="t_where", max_retries=0)
async def where(i: int) -> dict[str, Any]:
    """Where this step ran: the process, and the world it was given."""
    ctx = step_context.get()
    assert ctx is not None
    return {"i": i, "pid": os.getpid(), "world": id(ctx.world)}


@step(name="t_fatal")
async def fatal() -> None:
    raise FatalError("no way")


@workflow(name="t_remote_steps")
async def remote_steps(n: int) -> list[dict[str, Any]]:
    parallel = await asyncio.gather(*(where(i) for i in range(n)))
    last = await where(n)
    total = await add(len(parallel), 1)
    assert total == n + 1
    return [*parallel, last]


@step(name="t_slow_where", max_retries=0)
async def slow_where(seconds: float) -> int:
    await asyncio.sleep(seconds)
    return os.getpid()


@workflow(name="t_remote_slow")
async def remote_slow(seconds: float) -> int:
    return await slow_where(seconds)


#: how often `t_count` ran, by label
COUNTS: collections.Counter[str] = collections.Counter()
#: `t_count` with a label in here waits for that event before it returns
GATES: dict[str, asyncio.Event] = {}


@step(name="t_count", max_retries=0)
async def count(label: str) -> int:
    """Counts its runs by `label` (and waits at `GATES[label]`, if there is one)."""
    COUNTS[label] += 1
    gate = GATES.get(label)
    if gate is not None:
        await gate.wait()
    return COUNTS[label]
