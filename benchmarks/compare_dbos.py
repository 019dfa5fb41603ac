#!/usr/bin/env python3
"""worldflow and DBOS Transact side by side, on the same database, in one invocation.

The workload is the peer's (../shared/peers/dbos_bench.py): workflows of M trivial
steps; throughput = N workflows with C in flight; latency = workflows one after another,
per-step cost = (median_M - median_0) / M (worldflow's per_step_ms: the median of the
differences of workflows run in pairs, see engine.py; per_step_ms_from_medians is the
peer's estimate). DBOS runs in its own virtualenv:

    python -m venv /tmp/dbos-venv && /tmp/dbos-venv/bin/pip install dbos==3.4.0 'psycopg[binary]'
    python benchmarks/compare_dbos.py --db postgres
    python benchmarks/compare_dbos.py --db sqlite

Prints one JSON object with both engines' figures and the ratios (worldflow / DBOS for
throughput, DBOS / worldflow for latency: above 1 means worldflow is better).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS = HERE.parent.parent / "shared" / "peers"
PG_URL = "postgresql://root@127.0.0.1:5432/{database}"
PG_ADMIN = "postgresql://root@127.0.0.1:5432/postgres"


def last_json(output: str) -> dict[str, Any]:
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)  # type: ignore[no-any-return]
    raise RuntimeError(f"no JSON in output:\n{output[-2000:]}")


def run(cmd: list[str]) -> dict[str, Any]:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{cmd[1]} failed:\n{done.stderr[-3000:]}")
    return last_json(done.stdout)


def reset_pg_database(database: str) -> None:
    import asyncio

    import asyncpg

    async def reset() -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        # an identifier cannot be a $n parameter; the name is checked by argparse
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database}"')
        await conn.close()

    asyncio.run(reset())


def _database_name(text: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", text):
        raise argparse.ArgumentTypeError("a database name: lower-case letters, digits, _")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--dbos-python", default="/tmp/dbos-venv/bin/python")
    ap.add_argument("--workflows", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--latency-workflows", type=int, default=200)
    ap.add_argument("--writers", type=int, default=1,
                    help="worldflow's Postgres group-commit writers (1: least CPU per step)")
    ap.add_argument("--database", default="worldflow_bench", type=_database_name,
                    help="Postgres database for worldflow (dropped and recreated)")
    args = ap.parse_args()
    peer = str(PEERS / "dbos_bench.py")
    common = ["--workflows", str(args.workflows), "--steps", str(args.steps)]

    dbos_tp = run([args.dbos_python, peer, "--db", args.db, *common, "--concurrency",
                   str(args.concurrency), "--phases", "throughput"])
    dbos_lat = run([args.dbos_python, peer, "--db", args.db, "--workflows",
                    str(args.latency_workflows), "--steps", str(args.steps),
                    "--concurrency", "1", "--phases", "latency"])
    ours_cmd = [sys.executable, str(HERE / "engine.py"), "--world", args.db, *common,
                "--concurrency", str(args.concurrency), "--latency",
                str(args.latency_workflows)]
    if args.db == "postgres":
        reset_pg_database(args.database)
        ours_cmd += ["--url", PG_URL.format(database=args.database),
                     "--writers", str(args.writers)]
    ours = run(ours_cmd)

    dbos_steps = dbos_tp["throughput"]["steps_per_s"]
    dbos_per_step = dbos_lat.get("per_step_overhead_ms")
    ours_steps = ours["throughput"]["steps_per_s"]
    ours_per_step = ours["latency"]["per_step_ms"]
    # the latency ratio compares like with like: the difference of medians, as the peer
    ours_from_medians = ours["latency"].get("per_step_ms_from_medians", ours_per_step)
    cpu = ours["throughput"].get("cpu") or {}
    over_floor = ours["latency"].get("per_step_over_floor")
    ratio = round(ours_steps / dbos_steps, 2)
    # the targets of the performance work, checked on this run's figures
    goals = {
        "total_cpu_ms_per_step": {"value": cpu.get("total_ms_per_step"), "goal": 0.3,
                                  "met": (cpu.get("total_ms_per_step") or 1e9) <= 0.3},
        "throughput_ratio": {"value": ratio, "goal": 20, "met": ratio >= 20},
    }
    if over_floor is not None:
        goals["per_step_over_floor"] = {"value": over_floor, "goal": 1.3,
                                        "met": over_floor <= 1.3}
    print(json.dumps({
        "goals": goals,
        "db": args.db, "writers": args.writers, "workflows": args.workflows, "steps": args.steps,
        "concurrency": args.concurrency,
        "worldflow": {"steps_per_s": ours_steps, "per_step_ms": ours_per_step,
                      "per_step_ms_from_medians": ours_from_medians,
                      "latency_median_ms": ours["latency"]["median_ms"],
                      "cpu_ms_per_step": ours["throughput"].get("cpu"),
                      "insert_commit_floor_ms": ours["latency"].get("insert_commit_floor_ms"),
                      "per_step_over_floor": ours["latency"].get("per_step_over_floor"),
                      "per_step_over_floor_ms": ours["latency"].get(
                          "per_step_over_floor_ms")},
        "dbos": {"steps_per_s": dbos_steps, "per_step_ms": dbos_per_step,
                 "latency_median_ms": dbos_lat["latency"]["median_ms"]},
        "throughput_ratio": ratio,
        "per_step_latency_ratio": (round(dbos_per_step / ours_from_medians, 2)
                                   if dbos_per_step and ours_from_medians > 0 else None),
        "raw": {"worldflow": ours, "dbos_throughput": dbos_tp, "dbos_latency": dbos_lat},
    }), flush=True)


if __name__ == "__main__":
    main()
