#!/usr/bin/env python3
"""Scale on Postgres: do starting, claiming and listing stay as fast with 100,000
completed runs in the tables as with 1,000? Prints the timings, their ratio and the
EXPLAIN plan of every hot query (each must use an index, not a sequential scan).

    python benchmarks/scale.py --url postgresql://root@127.0.0.1:5432/postgres

Prints one JSON object. It creates and drops its own database.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import time
import uuid
from typing import Any

import asyncpg

from worldflow import create_world, start, step, workflow
from worldflow.worlds.postgres import sql

FILL = """
INSERT INTO workflow_runs (id, workflow_name, status, input, output, started_at,
                           completed_at, created_at, updated_at)
SELECT 'old-' || g, 'scale_flow', 'completed', '{"args":[1],"kwargs":{}}', '2',
       now() - interval '1 day' + g * interval '1 ms', now(), now() - interval '1 day',
       now()
  FROM generate_series($1::int, $2::int) g;
INSERT INTO workflow_events (workflow_run_id, seq, event_type, correlation_id, payload,
                             created_at)
SELECT 'old-' || g, s, CASE s WHEN 0 THEN 'run_created' ELSE 'run_completed' END, NULL,
       CASE s WHEN 0 THEN '{"type":"run_created","workflow_name":"scale_flow","input":1}'
            ELSE '{"type":"run_completed","output":2}' END::json,
       now() - interval '1 day'
  FROM generate_series($1::int, $2::int) g, generate_series(0, 1) s;
INSERT INTO workflow_steps (id, workflow_run_id, correlation_id, step_name, status, attempt,
                            output, started_at, completed_at)
SELECT 'old-' || g || ':1', 'old-' || g, '1', 'scale_step', 'completed', 1, '2', now(),
       now() FROM generate_series($1::int, $2::int) g;
"""


@step(name="scale_step")
async def scale_step(x: int) -> int:
    return x + 1


@workflow(name="scale_flow")
async def scale_flow(x: int) -> int:
    return await scale_step(x)


async def fill(url: str, first: int, last: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in FILL.strip().split(";\n"):
            await conn.execute(statement.replace("$1::int", str(first))
                               .replace("$2::int", str(last)))
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def measure(url: str, prefix: str) -> dict[str, float]:
    world = create_world("postgres", connection_string=url, job_prefix=prefix)
    await world.open()  # storage only: claims are measured by hand
    try:
        starts, claims, lists = [], [], []
        for _ in range(200):
            t0 = time.perf_counter()
            await start(scale_flow, 1, world=world)
            starts.append(time.perf_counter() - t0)
        for _ in range(200):
            t0 = time.perf_counter()
            assert len(await world.claim_runs("bench", 1, 30.0)) == 1
            claims.append(time.perf_counter() - t0)
        for _ in range(100):
            t0 = time.perf_counter()
            page = await world.list_runs(limit=50)
            await world.list_runs(status="failed", limit=50)
            await world.list_runs(limit=50, cursor=page.next_cursor)
            lists.append(time.perf_counter() - t0)
        return {"start_ms": round(statistics.median(starts) * 1e3, 3),
                "claim_ms": round(statistics.median(claims) * 1e3, 3),
                "list_ms": round(statistics.median(lists) * 1e3, 3)}
    finally:
        await world.close()


async def plans(url: str) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    queries = {
        "get_run": (sql.GET_RUN, ["old-5"]),
        "list_runs": (sql.LIST_RUNS, [None, None, None, None, 51]),
        "list_runs_by_status": (sql.LIST_RUNS, ["failed", None, None, None, 51]),
        "list_runs_page_2": (sql.LIST_RUNS, [None, None, now, "old-5", 51]),
        "list_events": (sql.LIST_EVENTS, ["old-5", -1, None]),
        "list_steps": (sql.LIST_STEPS, ["old-5"]),
        "claim_ready": (sql.CLAIM_READY, ["p", now, 10, "o", now]),
        "claim_expired": (sql.CLAIM_EXPIRED, ["p", now, 10, "o", now]),
        "renew_leases": (sql.RENEW_LEASES, ["p", "o", now]),
        "next_wake": (sql.NEXT_WAKE, ["p"]),
        "read_inbox": (sql.READ_INBOX, ["old-5"]),
    }
    out: dict[str, Any] = {}
    conn = await asyncpg.connect(url)
    try:
        for name, (query, args) in queries.items():
            rows = await conn.fetch("EXPLAIN " + query, *args)  # plans only: nothing runs
            plan = [r[0] for r in rows]
            out[name] = {"plan": plan, "seq_scan": any("Seq Scan" in line for line in plan)}
    finally:
        await conn.close()
    return out


async def amain(admin_url: str, big: int) -> dict[str, Any]:
    name = f"worldflow_scale_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        world = create_world("postgres", connection_string=url)
        await world.open()
        await world.close()
        await fill(url, 1, 1000)
        small = await measure(url, "small")
        await fill(url, 1001, big)
        large = await measure(url, "large")
        explained = await plans(url)
        return {
            "benchmark": "scale", "runs_small": 1000, "runs_large": big,
            "small": small, "large": large,
            "ratio": {k: round(large[k] / small[k], 2) for k in small},
            "any_seq_scan": any(p["seq_scan"] for p in explained.values()),
            "plans": explained,
        }
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="postgresql://root@127.0.0.1:5432/postgres")
    ap.add_argument("--runs", type=int, default=100_000)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(amain(args.url, args.runs))), flush=True)


if __name__ == "__main__":
    main()
