#!/usr/bin/env python3
"""Memory held by suspended runs: N runs wait on a hook (or a long sleep); a waiting run
holds no actor, so the process should grow by little per run. Then every hook is
resumed and every run must complete.

    python benchmarks/suspended.py --world sqlite --runs 10000

Prints one JSON object: bytes of Python heap (tracemalloc) and of RSS per suspended run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import tempfile
import time
import tracemalloc
from typing import Any

from worldflow import (
    HookNotFoundError,
    create_hook,
    create_world,
    resume_hook,
    sleep,
    start,
    step,
    workflow,
)


@step
async def note(i: int) -> int:
    return i


@workflow
async def wait_for_approval(i: int) -> int:
    await note(i)
    hook = create_hook(f"approval-{i}")
    payload = await hook
    return int(payload["n"])


@workflow
async def sleep_for_a_day(i: int) -> int:
    await note(i)
    await sleep("1d")
    return i


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        options: dict[str, Any] = {"queue_concurrency": 50}
        if args.world == "sqlite":
            options["path"] = os.path.join(tmp, "suspended.db")
        if args.world == "postgres":
            options["connection_string"] = args.url
            options["job_prefix"] = f"susp{os.getpid()}"
        async with create_world(args.world, **options) as world:
            # warm up code paths and caches before measuring
            warm = [await start(wait_for_approval, -1 - i, world=world) for i in range(50)]
            await asyncio.sleep(0.5)
            gc.collect()
            tracemalloc.start()
            heap0, rss0 = tracemalloc.get_traced_memory()[0], rss_bytes()
            t0 = time.perf_counter()
            runs = [await start(wait_for_approval, i, world=world) for i in range(args.runs)]
            while world.engine.actors:  # noqa: ASYNC110 - until every run waits, evicted
                await asyncio.sleep(0.1)
            elapsed = time.perf_counter() - t0
            gc.collect()
            heap1, rss1 = tracemalloc.get_traced_memory()[0], rss_bytes()
            tracemalloc.stop()
            live_actors = len(world.engine.actors)
            t1 = time.perf_counter()
            sem = asyncio.Semaphore(100)

            async def resume(i: int) -> None:
                async with sem:
                    while True:
                        try:
                            await resume_hook(f"approval-{i}", {"n": i}, world=world)
                            return
                        except HookNotFoundError:  # its run has not reached the hook yet
                            await asyncio.sleep(0.05)

            await asyncio.gather(*(resume(i) for i in range(args.runs)))
            results = await asyncio.gather(*(r.result(timeout=600) for r in runs))
            resumed_s = time.perf_counter() - t1
            assert results == list(range(args.runs)), "a resumed run returned a wrong value"
            for i, _ in enumerate(warm):
                await resume_hook(f"approval-{-1 - i}", {"n": 0}, world=world)
            # records kept in the process by the memory world are storage, not actors
            return {
                "benchmark": "suspended", "world": args.world, "runs": args.runs,
                "suspend_s": round(elapsed, 2), "live_actors_while_suspended": live_actors,
                "heap_bytes_per_run": round((heap1 - heap0) / args.runs, 1),
                "rss_bytes_per_run": round((rss1 - rss0) / args.runs, 1),
                "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "resume_all_s": round(resumed_s, 2), "all_completed": True,
            }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", choices=["memory", "sqlite", "postgres"], default="sqlite")
    ap.add_argument("--url", default="postgresql://root@127.0.0.1:5432/postgres")
    ap.add_argument("--runs", type=int, default=10000)
    print(json.dumps(asyncio.run(amain(ap.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
