"""A worker process for crash trials: python trial_app.py <marker_file> <run_count> <mode>.

mode "work": start the runs (idempotent by run id) and process the queue until every
run has ended; print "DONE" and the results as JSON. Every step body appends
"<step_id> <attempt> <pid>" to the marker file before it returns.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from worldflow import create_world, get_run, get_step_metadata, sleep, start, step, workflow

MARKER = sys.argv[1] if len(sys.argv) > 1 else "/dev/null"


def mark() -> None:
    meta = get_step_metadata()
    with open(MARKER, "a") as f:
        f.write(f"{meta.step_id} {meta.attempt} {os.getpid()}\n")
        f.flush()


@step(name="trial_fetch")
async def fetch(n: int) -> list[int]:
    await asyncio.sleep(0.02)
    mark()
    return list(range(n))


@step(name="trial_square")
async def square(x: int) -> int:
    await asyncio.sleep(0.03)
    mark()
    return x * x


@step(name="trial_total")
async def total(values: list[int]) -> int:
    await asyncio.sleep(0.02)
    mark()
    return sum(values)


@workflow(name="trial_flow")
async def trial_flow(seed: int) -> int:
    items = await fetch(6)                                          # 1 step
    squares = await asyncio.gather(*(square(x + seed) for x in items))  # 6 steps
    await sleep("300ms")                                            # a durable sleep
    first = await total(squares)                                    # 1 step
    second = await square(first % 7)                                # 1 step
    return await total([first, second])                             # 1 step: 10 in all


def expected(seed: int) -> int:
    first = sum((x + seed) ** 2 for x in range(6))
    return first + (first % 7) ** 2


async def main() -> None:
    count = int(sys.argv[2])
    options = {"lease_seconds": float(os.environ.get("TRIAL_LEASE_SECONDS", "30"))}
    async with create_world(**options) as world:
        runs = []
        for i in range(count):
            run_id = f"trial-{i}"
            runs.append(await start(trial_flow, i, world=world, run_id=run_id))
        print("STARTED", flush=True)
        results = {}
        for i in range(count):
            run = await get_run(f"trial-{i}", world=world)
            results[run.run_id] = await run.result(timeout=120)
        print("DONE " + json.dumps(results), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
