#!/usr/bin/env python3
"""Scale on Postgres: do starting, claiming and listing stay as fast with 100,000
completed runs in the tables as with 1,000? Prints the timings, their ratio and the
EXPLAIN plan of every hot query (each must use an index, not a sequential scan).

Listing includes a tag filter (`customer`: 100 runs each at 100,000; `plan=pro`: a
tenth of all runs) and a cursor page deep into it. Every old run has the same
created_at, so each page boundary is decided by the run id (the keyset's tie-break).
The same listing is measured and EXPLAINed on a SQLite file of as many runs.

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
                           completed_at, created_at, updated_at, steps_total,
                           steps_completed)
SELECT 'old-' || g, 'scale_flow', 'completed', '{"args":[1],"kwargs":{}}', '2',
       now() - interval '1 day' + g * interval '1 ms', now(), now() - interval '1 day',
       now(), 1, 1
  FROM generate_series($1::int, $2::int) g;
INSERT INTO workflow_events (workflow_run_id, seq, event_type, correlation_id, payload,
                             created_at)
SELECT 'old-' || g, s,
       (ARRAY['run_created', 'step_started', 'step_completed', 'run_completed'])[s + 1],
       CASE WHEN s IN (1, 2) THEN '1' END,
       (ARRAY['{"type":"run_created","workflow_name":"scale_flow","input":1}',
              '{"type":"step_started","correlation_id":"1","step_name":"scale_step",'
              '"attempt":1,"input":{"args":[1],"kwargs":{}}}',
              '{"type":"step_completed","correlation_id":"1","step_name":"scale_step",'
              '"attempt":1,"output":2}',
              '{"type":"run_completed","output":2}'])[s + 1]::json,
       now() - interval '1 day'
  FROM generate_series($1::int, $2::int) g, generate_series(0, 3) s;
INSERT INTO workflow_inbox (workflow_run_id, kind, token, payload, created_at)
SELECT 'old-' || g, 'message', 'default', '1', now() - interval '1 day'
  FROM generate_series($1::int, $2::int) g WHERE g % 100 = 0;
UPDATE workflow_runs SET tags = json_build_object('customer', 'c' || (substr(id, 5)::int % 1000),
                                                  'plan', CASE WHEN substr(id, 5)::int % 10 = 0
                                                          THEN 'pro' ELSE 'free' END)
 WHERE id LIKE 'old-%' AND substr(id, 5)::int BETWEEN $1::int AND $2::int;
INSERT INTO workflow_run_tags (workflow_run_id, key, value, created_at)
SELECT r.id, t.key, t.value, r.created_at FROM workflow_runs r, json_each_text(r.tags) t
 WHERE r.id LIKE 'old-%' AND substr(r.id, 5)::int BETWEEN $1::int AND $2::int;
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


async def measure(url: str, prefix: str, runs: int) -> dict[str, float]:
    world = create_world("postgres", connection_string=url, job_prefix=prefix)
    await world.open()  # storage only: claims are measured by hand
    try:
        starts, claims, lists, tag_lists, broad_first = [], [], [], [], []
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
        deep = await deep_cursor(world, runs)
        for i in range(100):
            t0 = time.perf_counter()
            await world.list_runs(tags={"customer": f"c{i}"}, limit=50)
            page = await world.list_runs(tags={"plan": "pro"}, limit=50)
            await world.list_runs(tags={"plan": "pro"}, limit=50, cursor=deep)
            await world.list_runs(tags={"customer": "c10", "plan": "pro"}, limit=50)
            tag_lists.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await world.list_runs(tags={"plan": "pro", "customer": "c10"}, limit=50)
            broad_first.append(time.perf_counter() - t0)
        return {"start_ms": round(statistics.median(starts) * 1e3, 3),
                "claim_ms": round(statistics.median(claims) * 1e3, 3),
                "list_ms": round(statistics.median(lists) * 1e3, 3),
                "tag_list_ms": round(statistics.median(tag_lists) * 1e3, 3),
                # two tags, the broad one first: it drives the index walk
                "two_tags_broad_first_ms": round(statistics.median(broad_first) * 1e3, 3)}
    finally:
        await world.close()


async def deep_cursor(world: Any, runs: int) -> str | None:
    """The cursor after the middle `plan=pro` run (a tenth of `runs` are): a page deep
    into the filter, walked to in pages of at most 1,000."""
    half = max(1, runs // 20)
    cursor, taken = None, 0
    while taken < half:
        page = await world.list_runs(tags={"plan": "pro"}, limit=min(1000, half - taken),
                                     cursor=cursor)
        taken += len(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return cursor


def listing(status: str | None = None, cursor: tuple[dt.datetime, str] | None = None,
            tags: dict[str, str] | None = None) -> tuple[str, list[Any]]:
    """The Postgres world's listing query for these filters, with its arguments."""
    pairs = list((tags or {}).items())
    query, names = sql.LIST_RUNS_BY_FILTER[status is not None, False, cursor is not None,
                                           False, min(len(pairs), 2)]
    values = {"status": status, "limit": 51,
              "after_at": cursor[0] if cursor else None,
              "after_id": cursor[1] if cursor else None,
              "tag_key": pairs[0][0] if pairs else None,
              "tag_value": pairs[0][1] if pairs else None,
              "tag_keys": [k for k, _ in pairs], "tag_values": [v for _, v in pairs]}
    return query, [values[name] for name in names]


async def plans(url: str) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    day_ago = now - dt.timedelta(days=1)
    queries = {
        "get_run": (sql.GET_RUN, ["old-5"]),
        "list_runs": listing(),
        "list_runs_by_status": listing(status="failed"),
        "list_runs_page_2": listing(cursor=(now, "old-5")),
        "list_runs_by_tag": listing(tags={"customer": "c7"}),
        "list_runs_by_tag_page_n": listing(tags={"plan": "pro"},
                                           cursor=(day_ago, "old-50000")),
        "list_runs_by_two_tags": listing(tags={"customer": "c10", "plan": "pro"}),
        "list_runs_by_two_tags_broad_first": listing(tags={"plan": "pro", "customer": "c10"}),
        "list_events": (sql.LIST_EVENTS, ["old-5", -1, None]),
        "list_steps": (sql.LIST_STEPS, ["old-5"]),
        "claim_ready": (sql.CLAIM_READY, ["p", now, 10, "o", now]),
        "claim_expired": (sql.CLAIM_EXPIRED, ["p", now, 10, "o", now]),
        "renew_leases": (sql.RENEW_LEASES, ["p", "o", now]),
        "next_wake": (sql.NEXT_WAKE, ["p"]),
        "read_inbox": (sql.READ_INBOX, ["old-500"]),
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
        small = await measure(url, "small", 1000)
        await fill(url, 1001, big)
        large = await measure(url, "large", big)
        explained = await plans(url)
        on_sqlite = await sqlite_listing(big)
        return {
            "benchmark": "scale", "runs_small": 1000, "runs_large": big,
            "small": small, "large": large,
            "ratio": {k: round(large[k] / small[k], 2) for k in small},
            "any_seq_scan": any(p["seq_scan"] for p in explained.values()),
            "plans": explained,
            "sqlite": on_sqlite,
        }
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


SQLITE_FILL_RUNS = (
    "INSERT INTO workflow_runs (id, workflow_name, status, input, output, created_at, "
    "updated_at, tags) VALUES (?, 'scale_flow', 'completed', '{}', '2', ?, ?, ?)")
SQLITE_FILL_TAGS = ("INSERT INTO workflow_run_tags (workflow_run_id, key, value, created_at) "
                    "VALUES (?, ?, ?, ?)")


async def sqlite_listing(count: int) -> dict[str, Any]:
    """The same listing on a SQLite file of `count` runs: timings and query plans."""
    import os
    import sqlite3
    import tempfile

    from worldflow.worlds.cursor import decode_cursor
    from worldflow.worlds.sqlite import reads
    from worldflow.worlds.sqlite.codec import encode_time

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "scale.db")
        world = create_world("sqlite", path=path)
        await world.open()
        await world.close()
        at = encode_time(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
        conn = sqlite3.connect(path)
        try:
            runs, tags = [], []
            for g in range(1, count + 1):
                customer, tier = f"c{g % 1000}", "pro" if g % 10 == 0 else "free"
                runs.append((f"old-{g}", at, at,
                             json.dumps({"customer": customer, "plan": tier})))
                tags += [(f"old-{g}", "customer", customer, at),
                         (f"old-{g}", "plan", tier, at)]
            conn.executemany(SQLITE_FILL_RUNS, runs)
            conn.executemany(SQLITE_FILL_TAGS, tags)
            conn.commit()
            conn.execute("ANALYZE")
        finally:
            conn.close()
        world = create_world("sqlite", path=path)
        await world.open()
        try:
            deep = await deep_cursor(world, count)
            timings = []
            for i in range(50):
                t0 = time.perf_counter()
                await world.list_runs(tags={"customer": f"c{i}"}, limit=50)
                await world.list_runs(tags={"plan": "pro"}, limit=50)
                await world.list_runs(tags={"plan": "pro"}, limit=50, cursor=deep)
                await world.list_runs(tags={"customer": "c10", "plan": "pro"}, limit=50)
                timings.append(time.perf_counter() - t0)
        finally:
            await world.close()
        assert deep is not None
        after_at, after_id = decode_cursor(deep)
        params = {"status": None, "name": None, "since": None, "limit": 51,
                  "after_at": encode_time(after_at), "after_id": after_id,
                  "tag_key": "plan", "tag_value": "pro",
                  "tags": json.dumps({"customer": "c10", "plan": "pro"}), "tag_count": 2}
        queries = {"list_runs": (False, False, False, False, 0),
                   "list_runs_page_2": (False, False, True, False, 0),
                   "list_runs_by_tag": (False, False, False, False, 1),
                   "list_runs_by_tag_page_n": (False, False, True, False, 1),
                   "list_runs_by_two_tags": (False, False, False, False, 2)}
        conn = sqlite3.connect(path)
        try:
            explained = {}
            for name, flags in queries.items():
                rows = conn.execute("EXPLAIN QUERY PLAN " + reads.LIST_RUNS[flags],
                                    params).fetchall()
                plan = [row[-1] for row in rows]
                explained[name] = {
                    "plan": plan,
                    # a SCAN without an index; json_each (the wanted tags) is no table
                    "full_scan": any(line.startswith("SCAN") and "USING" not in line
                                     and "VIRTUAL TABLE" not in line for line in plan),
                    "temp_sort": any("TEMP B-TREE" in line for line in plan)}
        finally:
            conn.close()
        return {"runs": count,
                "tag_list_ms": round(statistics.median(timings) * 1e3, 3),
                "any_full_scan": any(p["full_scan"] for p in explained.values()),
                "any_temp_sort": any(p["temp_sort"] for p in explained.values()),
                "plans": explained}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="postgresql://root@127.0.0.1:5432/postgres")
    ap.add_argument("--runs", type=int, default=100_000)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(amain(args.url, args.runs))), flush=True)


if __name__ == "__main__":
    main()
