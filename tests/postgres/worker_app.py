"""A worker process for multi-process tests: python worker_app.py <mode> <marker> [n].

mode "enqueue": create n runs (ids load-0..), without processing; print "ENQUEUED".
mode "work": process the queue until told to stop (SIGTERM); every step body appends
"<step_id> <attempt> <pid>" to the marker file.
The world comes from the environment (WORKFLOW_POSTGRES_URL, ..._JOB_PREFIX).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from worldflow import Queue, create_world, get_step_metadata, start, step, workflow
from worldflow.core.world import BaseWorld

MARKER = sys.argv[2] if len(sys.argv) > 2 else os.devnull


@step(name="mp_work")
async def work(x: int) -> int:
    await asyncio.sleep(float(os.environ.get("STEP_SECONDS", "0.02")))
    mark()
    return x * 2


def mark() -> None:
    meta = get_step_metadata()
    with open(MARKER, "a") as f:
        f.write(f"{meta.step_id} {meta.attempt} {os.getpid()}\n")


@workflow(name="mp_flow")
async def mp_flow(x: int) -> int:
    a = await work(x)
    b, c = await asyncio.gather(work(a), work(a + 1))
    return b + c


api = Queue("partner_api", concurrency=2, rate_limit=(4, "500ms"))


@step(name="mp_call_api", queue=api)
async def call_api(i: int) -> int:
    log_time("start", i)
    await asyncio.sleep(0.05)
    log_time("end", i)
    return i


def log_time(what: str, i: int) -> None:
    with open(MARKER, "a") as f:
        f.write(f"{what} {time.time():.6f} {i} {os.getpid()}\n")


@workflow(name="mp_api_flow")
async def api_flow(i: int) -> int:
    return await call_api(i)


async def main() -> None:
    mode = sys.argv[1]
    world = create_world(lease_seconds=float(os.environ.get("LEASE_SECONDS", "30")))
    assert isinstance(world, BaseWorld)
    if mode == "enqueue":
        await world.open()  # storage only: this process never runs workflows
        try:
            flow = api_flow if os.environ.get("FLOW") == "api" else mp_flow
            for i in range(int(sys.argv[3])):
                await start(flow, i, world=world, run_id=f"load-{i}")
        finally:
            await world.close()
        print("ENQUEUED", flush=True)
        return
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with world:
        print("READY", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
