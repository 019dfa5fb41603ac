"""`worldflow doctor`: checks a deployment's world and says what to do about each finding.

Checks: the schema version, the clock skew between this host and the database, the
lease settings, runs leased by a dead worker, and runs pending for longer than
``--stuck-minutes``. Each check is ``ok``, ``warn`` or ``fail``; the command exits 1
if any failed. With ``--json``: ``{"ok": bool, "checks": [{"name", "status",
"detail", "advice"}]}``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sqlite3
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import anyio
from rich.text import Text

from worldflow.cli.render import print_json
from worldflow.core.engine import _hostname, _pid_alive

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

    from worldflow.core.world import World

__all__ = ["Check", "doctor", "run_checks"]

#: skew (seconds) between this host's clock and the database's worth a warning / a failure
SKEW_WARN = 1.0
SKEW_FAIL = 5.0
STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    advice: str = ""


async def run_checks(world: World, *, stuck_minutes: float) -> list[Check]:
    return [await _schema(world), await _clock(world), _leases(world),
            await _dead_owners(world), await _stuck_pending(world, stuck_minutes)]


async def _schema(world: World) -> Check:
    name = getattr(world, "name", "")
    if name == "sqlite":
        from worldflow.worlds.sqlite.schema import SCHEMA_VERSION

        path = str(getattr(world, "path", ""))
        version = await anyio.to_thread.run_sync(_sqlite_version, path)
    elif name == "postgres":
        import asyncpg

        from worldflow.worlds.postgres.schema import SCHEMA_VERSION, SELECT_VERSION

        conn = await asyncpg.connect(getattr(world, "connection_string", ""), timeout=10)
        try:
            version = int(await conn.fetchval(SELECT_VERSION))
        finally:
            await conn.close()
    else:
        return Check("schema", "ok", f"the {name or 'custom'} world has no stored schema")
    if version == SCHEMA_VERSION:
        return Check("schema", "ok", f"version {version}, the one this worldflow uses")
    return Check("schema", "fail", f"version {version}; this worldflow uses {SCHEMA_VERSION}",
                 "upgrade worldflow on every host, or run `worldflow postgres-setup`")


def _sqlite_version(path: str) -> int:
    uri = "file:" + urllib.request.pathname2url(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        return int(conn.execute("SELECT max(version) FROM worldflow_schema").fetchone()[0])
    finally:
        conn.close()


async def _clock(world: World) -> Check:
    if getattr(world, "name", "") != "postgres":
        return Check("clock skew", "ok", "the world lives on this host: one clock")
    import asyncpg

    conn = await asyncpg.connect(getattr(world, "connection_string", ""), timeout=10)
    try:
        before = time.time()
        server: dt.datetime = await conn.fetchval("SELECT clock_timestamp()")
        after = time.time()
    finally:
        await conn.close()
    skew = server.timestamp() - (before + after) / 2
    detail = (f"the database's clock is {abs(skew):.3f}s "
              f"{'ahead of' if skew > 0 else 'behind'} this host's "
              f"(measured within {(after - before) * 1000:.1f}ms)")
    advice = ("run NTP (chrony, systemd-timesyncd) on every worker host and the "
              "database host: lease expiry, sleeps and retry times are compared across "
              "hosts")
    if abs(skew) >= SKEW_FAIL:
        return Check("clock skew", "fail", detail, advice)
    if abs(skew) >= SKEW_WARN:
        return Check("clock skew", "warn", detail, advice)
    return Check("clock skew", "ok", detail)


def _leases(world: World) -> Check:
    lease = float(world.lease_seconds)
    keep_alive = float(world.keep_alive)
    detail = (f"lease_seconds={lease:g} (a dead worker's runs wait this long on other "
              f"hosts), keep_alive={keep_alive:g}s")
    if lease < 5:
        return Check("lease settings", "warn", detail,
                     "a lease under 5s can expire under a GC pause or a slow commit, and "
                     "another worker then takes a live run over: raise lease_seconds")
    if lease > 300:
        return Check("lease settings", "warn", detail,
                     "runs of a worker that dies stay stuck this long before another "
                     "host takes them: lower lease_seconds")
    return Check("lease settings", "ok", detail)


async def _dead_owners(world: World) -> Check:
    owners = await world.lease_owners()
    host = _hostname()
    dead = []
    for owner in owners:
        owner_host, _, rest = owner.partition(":")
        pid_text = rest.partition(":")[0]
        if owner_host == host and pid_text.isdigit() and not _pid_alive(int(pid_text)):
            dead.append(owner)
    if dead:
        return Check("dead workers", "fail",
                     f"{len(dead)} worker(s) of this host hold leases but are not running: "
                     f"{', '.join(dead[:5])}",
                     "start a worker on this host (`worldflow serve --import ...`): it takes "
                     "their runs back at once; elsewhere they are taken when the lease "
                     f"expires ({world.lease_seconds:g}s)")
    others = len(owners)
    return Check("dead workers", "ok",
                 f"{others} worker(s) hold leases; none of this host's is dead (workers on "
                 f"other hosts are judged by their lease expiry)")


async def _stuck_pending(world: World, minutes: float) -> Check:
    cutoff = world.now() - dt.timedelta(minutes=minutes)
    stuck: list[Any] = []
    cursor = None
    while True:
        page = await world.list_runs(status="pending", limit=500, cursor=cursor)
        stuck += [run for run in page.items if run.created_at <= cutoff]
        cursor = page.next_cursor
        if cursor is None:
            break
    if not stuck:
        return Check("stuck runs", "ok", f"no run pending for longer than {minutes:g} min")
    oldest = min(stuck, key=lambda run: run.created_at)
    return Check("stuck runs", "warn",
                 f"{len(stuck)} run(s) pending for longer than {minutes:g} min; oldest "
                 f"{oldest.run_id} ({oldest.workflow_name}, created "
                 f"{oldest.created_at.isoformat(timespec='seconds')})",
                 "is a worker running that has these workflows registered? "
                 "`worldflow serve --import <module>`; runs on a queue wait for its slots")


async def doctor(world: World, args: argparse.Namespace, console: Console) -> None:
    checks = await run_checks(world, stuck_minutes=args.stuck_minutes)
    failed = any(check.status == "fail" for check in checks)
    if args.json:
        print_json({"ok": not failed, "checks": [dataclasses.asdict(c) for c in checks]})
    else:
        for check in checks:
            line = Text(f"{check.status.upper():5} ", style=STYLES[check.status])
            line.append(f"{check.name}: {check.detail}")
            console.print(line)
            if check.advice:
                console.print(Text(f"      what to do: {check.advice}", style="dim"))
    if failed:
        from worldflow.cli.errors import CliError

        raise CliError(f"doctor: {sum(c.status == 'fail' for c in checks)} check(s) failed")
