#!/usr/bin/env python3
"""Speed of the deploy check: replay many finished runs against the code.

Runs N workflows of M steps to completion, then opens the world again (storage only,
as `worldflow check-replay` does), lists the runs and replays every log with
`check_runs`, timing the listing plus the replays:

    python benchmarks/check_replay.py --world sqlite --runs 2000 --steps 5

Prints one JSON object: runs, steps per run, seconds, runs_per_s (and how many failed,
which must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from typing import Any

from worldflow import create_world, start, step, workflow
from worldflow.core.check import ReplayResult, check_runs

STEPS = {"count": 5}


@step(name="bench_check_add")
async def add(total: int, i: int) -> int:
    return total + i


@workflow(name="bench_check_flow")
async def flow(n: int) -> int:
    total = 0
    for i in range(STEPS["count"]):
        total = await add(total, i)
    return total + n


PG_ADMIN = "postgresql://root@127.0.0.1:5432/postgres"
PG_DATABASE = f"worldflow_bench_check_{os.getpid()}"


async def pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def make_world(kind: str, directory: str, **options: Any) -> Any:
    if kind == "sqlite":
        return create_world("sqlite", path=os.path.join(directory, "bench.db"), **options)
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + PG_DATABASE
    return create_world("postgres", connection_string=url, job_prefix="bench", **options)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    STEPS["count"] = args.steps
    tag = f"chk{os.getpid()}-"
    if args.world == "postgres":  # a database of its own, dropped at the end
        await pg_admin(f'CREATE DATABASE "{PG_DATABASE}"')
    try:
        results, seconds = await measure(args, tag)
    finally:
        if args.world == "postgres":
            await pg_admin(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
    failed = [r for r in results if r.error is not None]
    print(json.dumps({"world": args.world, "runs": len(results), "steps_per_run": args.steps,
                      "failed": len(failed), "seconds": round(seconds, 3),
                      "runs_per_s": round(len(results) / seconds, 1)}))


async def measure(args: argparse.Namespace, tag: str) -> tuple[list[ReplayResult], float]:
    with tempfile.TemporaryDirectory() as directory:
        async with make_world(args.world, directory, queue_concurrency=100) as world:
            runs = [await start(flow, i, world=world, run_id=f"{tag}{i}")
                    for i in range(args.runs)]
            for run in runs:
                await run.result(timeout=600)
        world = make_world(args.world, directory)
        await world.open()
        try:
            began = time.perf_counter()
            records = []
            cursor = None
            while True:
                page = await world.list_runs(status="completed",
                                             workflow_name="bench_check_flow",
                                             limit=1000, cursor=cursor)
                records += [r for r in page.items if r.run_id.startswith(tag)]
                cursor = page.next_cursor
                if cursor is None:
                    break
            results = await check_runs(world, records)
            seconds = time.perf_counter() - began
        finally:
            await world.close()
    return results, seconds


if __name__ == "__main__":
    asyncio.run(main())
