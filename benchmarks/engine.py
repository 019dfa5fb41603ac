#!/usr/bin/env python3
"""Engine throughput and latency: workflows of M no-op steps.

throughput: N workflows with at most C in flight; steps/s.
latency:    workflows one after another; median ms, and per-step ms.
scaling:    per-step time at M=--scale-steps against M=--steps (should stay flat).

    python benchmarks/engine.py --world memory
    python benchmarks/engine.py --world sqlite --workflows 1000 --steps 3 --concurrency 50
    python benchmarks/engine.py --world postgres --url postgresql://root@127.0.0.1/bench

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from typing import Any

from worldflow import create_world, start, step, workflow


@step
async def noop_step(i: int) -> dict[str, int]:
    return {"i": i}


@workflow
async def bench_workflow(m: int) -> int:
    for i in range(m):
        await noop_step(i)
    return m


def make_world(args: argparse.Namespace, tmp: str) -> Any:
    options: dict[str, Any] = {"queue_concurrency": args.concurrency}
    if args.world == "sqlite":
        options["path"] = os.path.join(tmp, "bench.db")
    if args.world == "postgres":
        options["connection_string"] = args.url
    return create_world(args.world, **options)


async def throughput(world: Any, n: int, m: int, c: int) -> float:
    sem = asyncio.Semaphore(c)

    async def one() -> None:
        async with sem:
            run = await start(bench_workflow, m, world=world)
            assert await run.result() == m

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t0


async def latency(world: Any, n: int, m: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        run = await start(bench_workflow, m, world=world)
        await run.result()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "engine": "worldflow", "version": "0.1.0", "world": args.world,
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "workflows": args.workflows, "steps": args.steps, "concurrency": args.concurrency,
    }
    with tempfile.TemporaryDirectory() as tmp:
        world = make_world(args, tmp)
        async with world:
            await throughput(world, 20, args.steps, args.concurrency)  # warm-up
            elapsed = await throughput(world, args.workflows, args.steps, args.concurrency)
            result["throughput"] = {
                "elapsed_s": round(elapsed, 3),
                "workflows_per_s": round(args.workflows / elapsed, 1),
                "steps_per_s": round(args.workflows * args.steps / elapsed, 1),
            }
            if args.latency:
                lat_m = await latency(world, args.latency, args.steps)
                lat_0 = await latency(world, args.latency, 0)
                med_m, med_0 = statistics.median(lat_m), statistics.median(lat_0)
                result["latency"] = {
                    "median_ms": round(med_m, 3), "empty_wf_median_ms": round(med_0, 3),
                    "per_step_ms": round((med_m - med_0) / max(1, args.steps), 3),
                }
            if args.scale_steps:
                small_n = max(1, args.scale_workflows * args.scale_steps // args.steps)
                small = await throughput(world, small_n, args.steps, args.concurrency)
                big = await throughput(world, args.scale_workflows, args.scale_steps,
                                       args.concurrency)
                per_small = small / (small_n * args.steps) * 1e6
                per_big = big / (args.scale_workflows * args.scale_steps) * 1e6
                result["scaling"] = {
                    f"per_step_us_m{args.steps}": round(per_small, 1),
                    f"per_step_us_m{args.scale_steps}": round(per_big, 1),
                    "ratio": round(per_big / per_small, 3),
                }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", choices=["memory", "sqlite", "postgres"], default="memory")
    ap.add_argument("--url", default="postgresql://root@127.0.0.1:5432/worldflow_bench")
    ap.add_argument("--workflows", "-n", type=int, default=1000)
    ap.add_argument("--steps", "-m", type=int, default=3)
    ap.add_argument("--concurrency", "-c", type=int, default=50)
    ap.add_argument("--latency", type=int, default=0, help="also run N sequential workflows")
    ap.add_argument("--scale-steps", type=int, default=0,
                    help="also compare per-step cost at this M (e.g. 500)")
    ap.add_argument("--scale-workflows", type=int, default=20)
    ap.add_argument("--uvloop", action="store_true")
    args = ap.parse_args()
    if args.uvloop:
        import uvloop

        result = uvloop.run(amain(args))
    else:
        result = asyncio.run(amain(args))
    result["uvloop"] = args.uvloop
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
