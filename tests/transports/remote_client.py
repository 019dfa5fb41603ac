"""Process A of the two-process tests: starts a workflow on a SQLite world and sends
its steps over HTTP to process B.

    python -m tests.transports.remote_client DB_PATH URL WORKFLOW ARG

Prints one JSON line: ``{"pid": ..., "run_id": ..., "result": ...}``.
"""

from __future__ import annotations

import json
import os
import sys

import anyio

from tests.transports import workflows
from worldflow import start
from worldflow.transports.http import use_http_steps
from worldflow.worlds import create_world


async def main(path: str, url: str, name: str, arg: str) -> None:
    world = create_world("sqlite", path=path)
    async with world:
        runner = use_http_steps(world, url, retry_delay=0.1, max_retry_delay=0.5)
        try:
            run = await start(getattr(workflows, name), json.loads(arg), world=world)
            print(json.dumps({"pid": os.getpid(), "run_id": run.run_id}), flush=True)
            result = await run.result(timeout=120)
        finally:
            await runner.aclose()
    print(json.dumps({"pid": os.getpid(), "run_id": run.run_id, "result": result}),
          flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:5])
