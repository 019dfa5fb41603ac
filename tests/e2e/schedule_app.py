"""A worker process for the schedule tests: python schedule_app.py <marker>.

Processes the queue (and so runs the scheduler) until SIGTERM; prints READY once
started. Every run of `sp_tick` appends "<run_id> <scheduled_at> <pid>" to the marker
file from its step. The world comes from the environment (WORKFLOW_POSTGRES_URL, ...).
"""

from __future__ import annotations

import os
import sys

from tests.worker_process import serve_until_sigterm
from worldflow import get_workflow_metadata, step, workflow

MARKER = sys.argv[1] if len(sys.argv) > 1 else os.devnull


@step(name="sp_mark")
async def mark() -> str:
    meta = get_workflow_metadata()
    at = meta.scheduled_at.isoformat() if meta.scheduled_at is not None else "-"
    _append(f"{meta.run_id} {at} {os.getpid()}\n")
    return meta.run_id


def _append(line: str) -> None:
    with open(MARKER, "a") as f:
        f.write(line)


@workflow(name="sp_tick")
async def tick() -> str:
    return await mark()


if __name__ == "__main__":
    serve_until_sigterm()
