"""The process that the crash-recovery tests kill: python crash_app.py MODE MARKER [COUNT].

The world comes from the environment (the tests set WORKFLOW_SQLITE_PATH). Run ids are
``crash-0`` .. ``crash-{COUNT-1}``; run ``crash-i`` runs `crash_flow(i)`.

- ``start``: start the runs (idempotent by run id), print ``STARTED``, wait for every
  result and print ``DONE {json}``.
- ``resume``: start nothing: opening the world resumes every unfinished run by itself;
  wait for every result and print ``DONE {json}``.

Every step body appends ``<run_id> <correlation_id> <step_name> <arg> <attempt> <pid>``
to MARKER (a file outside the database) just before it returns.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import anyio

from worldflow import create_world, get_run, get_step_metadata, sleep, start, step, workflow

#: how long each step body works: long enough for a kill to land mid-run
STEP_SECONDS = 0.2


def run_ids(count: int) -> list[str]:
    return [f"crash-{i}" for i in range(count)]


def expected(seed: int) -> dict[str, Any]:
    total = sum(x * x for x in (seed, seed + 1, seed + 2))
    return {"seed": seed, "total": total, "report": f"seed {seed}: {total}"}


async def work(arg: Any) -> None:
    await asyncio.sleep(STEP_SECONDS)
    meta = get_step_metadata()
    cid = meta.step_id.rpartition(":")[2]
    line = (f"{meta.run_id} {cid} {meta.step_name} {json.dumps(arg, separators=(',', ':'))} "
            f"{meta.attempt} {os.getpid()}\n")
    await anyio.to_thread.run_sync(append_marker, line)


def append_marker(line: str) -> None:
    with open(os.environ["CRASH_MARKER"], "a") as marker:  # one small append: one line
        marker.write(line)


@step(name="crash_load")
async def load(seed: int) -> list[int]:
    await work(seed)
    return [seed, seed + 1, seed + 2]


@step(name="crash_square")
async def square(x: int) -> int:
    await work(x)
    return x * x


@step(name="crash_total")
async def total(values: list[int]) -> int:
    await work(values)
    return sum(values)


@step(name="crash_report")
async def report(seed: int, value: int) -> str:
    await work(value)
    return f"seed {seed}: {value}"


@workflow(name="crash_flow")
async def crash_flow(seed: int) -> dict[str, Any]:
    values = await load(seed)                                    # 1 step
    squares = await asyncio.gather(*(square(x) for x in values))  # 3 steps in parallel
    await sleep("300ms")                                         # a durable sleep
    value = await total(list(squares))                           # 1 step
    return {"seed": seed, "total": value, "report": await report(seed, value)}  # 1 step


async def main(mode: str, count: int) -> None:
    async with create_world() as world:
        if mode == "start":
            for seed, run_id in enumerate(run_ids(count)):
                await start(crash_flow, seed, world=world, run_id=run_id)
            print("STARTED", flush=True)
        elif mode != "resume":
            raise SystemExit(f"unknown mode {mode!r}")
        results = {}
        for run_id in run_ids(count):
            run = await get_run(run_id, world=world)
            results[run_id] = await run.result(timeout=60)
        print("DONE " + json.dumps(results), flush=True)


if __name__ == "__main__":
    os.environ["CRASH_MARKER"] = sys.argv[2]
    asyncio.run(main(sys.argv[1], int(sys.argv[3]) if len(sys.argv) > 3 else 5))
