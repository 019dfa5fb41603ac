"""`POST /.well-known/workflow/v1/message`: a signed `send`, once per request id."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.transports.helpers import asgi_client, post_signed
from worldflow import receive, start, workflow


@workflow(name="t_http_messages")
async def two_messages() -> list[Any]:
    return [await receive("orders"), await receive("orders")]


def body(run_id: str, message: Any, request_id: str | None = None) -> bytes:
    return json.dumps({"request_id": request_id or uuid.uuid4().hex, "run_id": run_id,
                       "topic": "orders", "message": message}).encode()


async def test_a_signed_message_is_sent_once_per_request_id(memory_world: Any) -> None:
    run = await start(two_messages, world=memory_world)
    async with asgi_client(memory_world) as client:
        first = body(run.run_id, {"id": 1}, request_id="req-" + "a" * 12)
        answer = await post_signed(client, "/message", first)
        assert answer.status_code == 202, answer.text
        again = await post_signed(client, "/message", first)  # a redelivery: no new send
        assert again.status_code == 202
        assert (await post_signed(client, "/message", body(run.run_id, {"id": 2}))
                ).status_code == 202
        assert await run.result(timeout=30) == [{"id": 1}, {"id": 2}]
        gone = await post_signed(client, "/message", body(run.run_id, 3))
        assert gone.status_code == 409 and gone.json()["error"] == "run_finished"
        missing = await post_signed(client, "/message", body("no-such-run", 3))
        assert missing.status_code == 404
        unsigned = await client.post("/.well-known/workflow/v1/message",
                                     content=body(run.run_id, 4))
        assert unsigned.status_code == 401
