"""A worker for hook crash tests: python hook_app.py (world from the environment)."""

from __future__ import annotations

from typing import Any

from tests.worker_process import serve_until_sigterm
from worldflow import create_hook, workflow


@workflow(name="e2e_collect")
async def collect(token: str, count: int) -> list[Any]:
    received = []
    async for payload in create_hook(token):
        received.append(payload)
        if len(received) == count:
            return received
    return received


if __name__ == "__main__":
    serve_until_sigterm()
