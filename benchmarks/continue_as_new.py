#!/usr/bin/env python3
"""Replay cost stays flat with continue_as_new: a workflow loops N times (one step per
iteration, then `continue_as_new`); its last run then waits for a message, is evicted,
and is replayed when the message comes. The replay (message sent -> result) takes as
long after 10,000 iterations as after 10, because each run of the chain starts with an
empty log.

    python benchmarks/continue_as_new.py --world memory --iterations 10 10000

Prints one JSON object: for each N, the chain's wall time, the last run's log length
and the time of its replay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from typing import Any

from worldflow import continue_as_new, create_world, receive, send, start, step, workflow


@step(name="bench_can_add")
async def add(total: int, n: int) -> int:
    return total + n


@workflow(name="bench_can_loop")
async def loop(i: int, total: int, until: int) -> int:
    total = await add(total, i)
    if i < until:
        continue_as_new(i + 1, total, until)
    await receive()  # the last run waits here, evicted, and is replayed on the message
    return total


async def measure(world: Any, iterations: int) -> dict[str, Any]:
    first_id = f"bench-{uuid.uuid4().hex[:8]}"
    began = time.perf_counter()
    run = await start(loop, 1, 0, iterations, world=world, run_id=first_id)
    last_id = first_id if iterations == 1 else f"{first_id}~c{iterations - 1}"
    while True:  # until the last run waits for its message (its actor evicted)
        events = await world.list_events(last_id)
        if (any(e.event_type == "step_completed" for e in events)
                and last_id not in world.engine.actors):
            break
        await asyncio.sleep(0.005)
    chain_seconds = time.perf_counter() - began
    sent = time.perf_counter()
    await send(last_id, "go", world=world)
    await world.wait_run_finished(last_id, timeout=600)
    replay_ms = (time.perf_counter() - sent) * 1000
    # result() follows the chain from its first run (one lookup per run of the chain)
    assert await run.result(timeout=600) == iterations * (iterations + 1) // 2
    return {"iterations": iterations, "chain_seconds": round(chain_seconds, 3),
            "last_run_events": len(await world.list_events(last_id)),
            "replay_ms": round(replay_ms, 2)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="memory", choices=["memory", "sqlite"])
    parser.add_argument("--iterations", type=int, nargs="+", default=[10, 10_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        options: dict[str, Any] = {"keep_alive": 0.0}
        if args.world == "sqlite":
            options["path"] = os.path.join(tmp, "bench.db")
        async with create_world(args.world, **options) as world:
            results = [await measure(world, n) for n in args.iterations]
    print(json.dumps({"benchmark": "continue_as_new", "world": args.world,
                      "results": results}))


if __name__ == "__main__":
    asyncio.run(main())
