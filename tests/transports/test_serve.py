"""`serve()`: uvicorn on a real port, working on the world's queue, stopped cleanly."""

from __future__ import annotations

import functools
import socket
import uuid

import anyio
import httpx
import pytest

from tests.transports import workflows as wf
from tests.transports.helpers import PREFIX, SECRET, parked_run, signed, wait_webhook_ready
from tests.transports.test_signed_endpoints import step_body
from worldflow import start
from worldflow.transports.http import serve
from worldflow.worlds import create_world


async def test_serve_answers_on_a_real_port_and_closes_its_world_when_cancelled() -> None:
    world = create_world("memory")
    async with anyio.create_task_group() as tg:
        port = await tg.start(functools.partial(serve, secret=SECRET, log_level="warning"),
                              world, "127.0.0.1", 0)
        assert world.engine is not None  # the server also works on the queue
        token = f"wh-{uuid.uuid4().hex}"
        run = await start(wf.webhook_json, token, world=world)
        await wait_webhook_ready(world, token)
        base = f"http://127.0.0.1:{port}{PREFIX}"
        await parked_run(world, run_id="run-x")
        async with httpx.AsyncClient() as client:
            body = step_body()
            step = await client.post(base + "/step", content=body, headers=signed(body))
            assert step.status_code == 200
            hook = await client.post(f"{base}/webhook/{token}", json={"n": 1})
            assert hook.status_code == 202
        assert (await run.result(timeout=30))["json"] == {"n": 1}
        tg.cancel_scope.cancel()
    assert world.engine is None  # closed


async def test_serve_on_a_port_in_use_fails_before_starting_the_world() -> None:
    world = create_world("memory")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            await serve(world, "127.0.0.1", busy.getsockname()[1])
    assert world.engine is None
