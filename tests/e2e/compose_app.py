"""A worker for composition crash tests: python compose_app.py (world from the
environment)."""

from __future__ import annotations

from typing import Any

from tests.worker_process import serve_until_sigterm
from worldflow import receive, workflow


@workflow(name="e2e_child_waits")
async def child_waits(n: int) -> dict[str, Any]:
    first = await receive()
    second = await receive()
    return {"n": n, "messages": [first, second]}


@workflow(name="e2e_parent")
async def parent(n: int) -> dict[str, Any]:
    return await child_waits(n)


if __name__ == "__main__":
    serve_until_sigterm()
