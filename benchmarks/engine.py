#!/usr/bin/env python3
"""Engine throughput and latency: workflows of M no-op steps.

throughput: N workflows with at most C in flight; steps/s, and CPU per step: this
            process (client) and, on Postgres, the server processes that served it.
latency:    workflows one after another, each of M steps followed by an empty one;
            median ms, and per-step ms (the median of each pair's difference over M),
            with this process's CPU per step (client_cpu_ms_per_step: the worker's
            own part).
floor:      (Postgres) one INSERT + COMMIT into a WAL-logged table through asyncpg,
            serially, in the same run (as ../shared/peers/pg_limit.py does): the latency
            a durable step cannot beat; per_step_ms / floor = the engine's latency
            overhead factor. Workflows and floor inserts take turns one by one, so
            that both are timed on the same machine (its speed drifts).
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
from pathlib import Path
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


@step
async def clock_step() -> float:
    return time.process_time()


@workflow
async def long_log_workflow(fill: int, probe: int, probes: int) -> list[list[float]]:
    """After `probe` warm-up steps: `probes` probes of `probe` steps each on a fresh log,
    `fill` steps, then `probes` probes on the long log; the CPU time of each probe (one
    run, so nothing else shares the CPU)."""
    for i in range(probe):
        await noop_step(i)
    times: list[list[float]] = [[], []]
    for phase in (0, 1):
        if phase == 1:
            for i in range(fill):
                await noop_step(i)
        for _ in range(probes):
            t0 = await clock_step()
            for i in range(probe):
                await noop_step(i)
            times[phase].append(await clock_step() - t0)
    return times


def make_world(args: argparse.Namespace, tmp: str) -> Any:
    options: dict[str, Any] = {"queue_concurrency": args.concurrency}
    if args.world == "sqlite":
        options["path"] = os.path.join(tmp, "bench.db")
    if args.world == "postgres":
        options["connection_string"] = args.url
        options["writers"] = args.writers
    return create_world(args.world, **options)


async def throughput(world: Any, n: int, m: int, c: int) -> float:
    """n workflows, c at a time: c clients, each starting a workflow as soon as its
    last one ended. (Not n tasks made at once that wait for their turn: thousands of
    waiting tasks make the garbage collector's full passes longer and more frequent,
    a cost of the harness, not of the engine.)"""
    left = n

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            run = await start(bench_workflow, m, world=world)
            assert await run.result() == m

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(min(c, n))))
    return time.perf_counter() - t0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Postgres processes that work for every client (their CPU is shared by the benchmark)
AUX_BACKENDS = ("checkpointer", "background writer", "walwriter")
#: a WAL-logged table like ../shared/peers/pg_limit.py's: a TEMP table's commit writes no
#: WAL and waits for no flush, so it would understate what a durable write costs
FLOOR_TABLE = "CREATE TABLE {name} (id bigserial PRIMARY KEY, run_id text, kind text, " \
              "payload bytea, created_at timestamptz DEFAULT now())"
FLOOR_INSERT = "INSERT INTO {name} (run_id, kind, payload) VALUES ($1, $2, $3)"


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone, or not on Linux
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class ServerCpu:
    """CPU used by the Postgres server over a phase: the backends connected to the
    benchmark's database plus the shared writers (checkpointer, background writer,
    walwriter). Other clients' backends are left out (the machine may be shared)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def _pids(self) -> set[int]:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "OR backend_type = ANY($1::text[])", list(AUX_BACKENDS))
            backend = conn.get_server_pid()
        finally:
            await conn.close()
        return {r[0] for r in rows} - {backend}

    async def sample(self) -> dict[int, float]:
        return {pid: proc_cpu_seconds(pid) for pid in await self._pids()}


def server_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """Server CPU seconds between two samples."""
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


class FloorProbe:
    """One ~100-byte INSERT committed on its own, through asyncpg, on a connection and
    table of its own: `sample(k)` times k of them one after another (ms each)."""

    def __init__(self, conn: Any, name: str) -> None:
        self.conn, self.name = conn, name
        self.insert = FLOOR_INSERT.format(name=name)
        self.cpu_seconds = 0.0  # this process's CPU over all samples
        self.samples = 0

    @classmethod
    async def open(cls, url: str) -> FloorProbe:
        import asyncpg

        conn = await asyncpg.connect(url)
        name = f"worldflow_floor_{os.getpid()}"
        await conn.execute(FLOOR_TABLE.format(name=name))
        return cls(conn, name)

    async def sample(self, k: int) -> list[float]:
        payload = b"x" * 100
        times = []
        cpu = time.process_time()
        for _ in range(k):
            t0 = time.perf_counter()
            await self.conn.execute(self.insert, "r", "step_completed", payload)
            times.append((time.perf_counter() - t0) * 1000)
        self.cpu_seconds += time.process_time() - cpu
        self.samples += k
        return times

    async def close(self) -> None:
        try:
            await self.conn.execute(f"DROP TABLE IF EXISTS {self.name}")
        finally:
            await self.conn.close()


async def latency(world: Any, n: int, m: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        run = await start(bench_workflow, m, world=world)
        await run.result()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def latency_phase(world: Any, n: int, m: int, floor_url: str | None
                        ) -> dict[str, Any]:
    """n workflows of m steps and n empty ones, taking turns one by one, and (floor_url)
    a burst of floor inserts after every ten pairs. This machine's speed drifts within
    seconds, so the per-step time is taken from each pair run back to back (the median
    of their differences), and the floor from the same moments. The first inserts of a
    burst are not counted: their server process was idle, and the floor is what
    back-to-back commits cost (as ../shared/peers/pg_limit.py measures it)."""
    lat_m: list[float] = []
    lat_0: list[float] = []
    floor: list[float] = []
    cpu_m = cpu_0 = 0.0  # this process's CPU over the full and the empty workflows
    burst, warm = 50, 5  # floor inserts after every ten pairs; the first few not counted
    probe = await FloorProbe.open(floor_url) if floor_url else None
    try:
        for i in range(n):
            cpu = time.process_time()
            lat_m += await latency(world, 1, m)
            cpu_m += time.process_time() - cpu
            cpu = time.process_time()
            lat_0 += await latency(world, 1, 0)
            cpu_0 += time.process_time() - cpu
            if probe is not None and (i % 10 == 9 or i == n - 1):
                floor += (await probe.sample(warm + burst))[warm:]
    finally:
        if probe is not None:
            await probe.close()
    per_step = statistics.median(a - b for a, b in zip(lat_m, lat_0, strict=True)) / max(1, m)
    out: dict[str, Any] = {"median_ms": round(statistics.median(lat_m), 3),
                           "empty_wf_median_ms": round(statistics.median(lat_0), 3),
                           "per_step_ms": round(per_step, 3),
                           # as the peer's benchmark takes it: the medians' difference
                           "per_step_ms_from_medians": round(
                               (statistics.median(lat_m) - statistics.median(lat_0))
                               / max(1, m), 3),
                           # the worker's own part of per_step_ms: its CPU per step, run
                           # alone (the same subtraction of the empty workflows)
                           "client_cpu_ms_per_step": round(
                               (cpu_m - cpu_0) * 1000 / max(1, len(lat_m)) / max(1, m), 3)}
    if floor:
        out["insert_commit_floor_ms"] = round(statistics.median(floor), 3)
        assert probe is not None
        out["floor_client_cpu_ms"] = round(probe.cpu_seconds * 1000 / probe.samples, 3)
        out["per_step_over_floor"] = round(per_step / statistics.median(floor), 2)
        # what a step costs above one durable commit: the engine's own part of the
        # latency, which does not move with the disk as the ratio does
        out["per_step_over_floor_ms"] = round(per_step - statistics.median(floor), 3)
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
            server = ServerCpu(args.url) if args.world == "postgres" else None
            server_before = await server.sample() if server else {}
            cpu0 = time.process_time()
            elapsed = await throughput(world, args.workflows, args.steps, args.concurrency)
            client_cpu = time.process_time() - cpu0
            server_after = await server.sample() if server else {}
            steps = args.workflows * args.steps
            result["throughput"] = {
                "elapsed_s": round(elapsed, 3),
                "workflows_per_s": round(args.workflows / elapsed, 1),
                "steps_per_s": round(steps / elapsed, 1),
            }
            cpu = {"client_ms_per_step": round(client_cpu * 1000 / steps, 4)}
            if server is not None:
                own = server_delta(server_before, server_after)
                cpu["server_ms_per_step"] = round(own * 1000 / steps, 4)
                cpu["total_ms_per_step"] = round((client_cpu + own) * 1000 / steps, 4)
            else:
                cpu["total_ms_per_step"] = cpu["client_ms_per_step"]
            result["throughput"]["cpu"] = cpu
            if args.latency:
                result["latency"] = await latency_phase(
                    world, args.latency, args.steps,
                    args.url if args.world == "postgres" else None)
            if args.scale_steps:
                # as many workflows in flight in both phases (else group commit differs)
                big_n = max(args.scale_workflows, args.concurrency)
                small_n = max(1, big_n * args.scale_steps // args.steps)
                cpu0 = time.process_time()
                small = await throughput(world, small_n, args.steps, args.concurrency)
                cpu1 = time.process_time()
                big = await throughput(world, big_n, args.scale_steps, args.concurrency)
                cpu2 = time.process_time()
                n_small, n_big = small_n * args.steps, big_n * args.scale_steps
                per_small, per_big = small / n_small * 1e6, big / n_big * 1e6
                cpu_small, cpu_big = (cpu1 - cpu0) / n_small * 1e6, (cpu2 - cpu1) / n_big * 1e6
                result["scaling"] = {
                    f"per_step_us_m{args.steps}": round(per_small, 1),
                    f"per_step_us_m{args.scale_steps}": round(per_big, 1),
                    "ratio": round(per_big / per_small, 3),
                    f"client_cpu_us_per_step_m{args.steps}": round(cpu_small, 1),
                    f"client_cpu_us_per_step_m{args.scale_steps}": round(cpu_big, 1),
                    "cpu_ratio": round(cpu_big / cpu_small, 3),
                }
            if args.long_log:
                probe, probes = 200, 5
                run = await start(long_log_workflow, args.long_log // 2, probe, probes,
                                  world=world)
                fresh_times, long_times = await run.result()
                fresh = statistics.median(fresh_times)
                long = statistics.median(long_times)
                steps_before = probe + probes * (probe + 2) + args.long_log // 2
                result["long_log"] = {
                    "events_before_probe": 2 * steps_before + 2,
                    "fresh_cpu_us_per_step": round(fresh / probe * 1e6, 1),
                    "long_log_cpu_us_per_step": round(long / probe * 1e6, 1),
                    "ratio": round(long / fresh, 3),
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
    ap.add_argument("--scale-workflows", type=int, default=20,
                    help="workflows at --scale-steps (at least --concurrency are run)")
    ap.add_argument("--long-log", type=int, default=0,
                    help="also compare a step's CPU on a fresh log and on one of N events")
    ap.add_argument("--writers", type=int, default=1,
                    help="Postgres: group-commit writer connections (WORKFLOW_POSTGRES_WRITERS)")
    ap.add_argument("--uvloop", action="store_true")
    args = ap.parse_args()
    if args.uvloop:
        import uvloop

        result = uvloop.run(amain(args))
    else:
        result = asyncio.run(amain(args))
    result["uvloop"] = args.uvloop
    if args.world == "postgres":
        result["writers"] = args.writers
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
