"""The CLI on worlds that are not what they should be: a factory that makes no world,
a SQLite file on a read-only mount, a Postgres server that never answers."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.cli.helpers import cli_env, run_cli
from worldflow.errors import WorldError
from worldflow.worlds.postgres import PostgresWorld
from worldflow.worlds.sqlite import SQLiteWorld

if TYPE_CHECKING:
    from pathlib import Path


def test_factory_returning_no_world_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = run_cli(None, "inspect", "runs", WORKFLOW_TARGET_WORLD="os:getcwd")
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert "WORKFLOW_TARGET_WORLD=os:getcwd" in result.err
    assert "not a world" in result.err


async def test_read_only_world_reads_everything_and_refuses_writes(
        populated_db: str, tmp_path: Path) -> None:
    path = str(tmp_path / "ro.db")
    shutil.copy(populated_db, path)
    world = SQLiteWorld(path, read_only=True)
    await world.open()
    try:
        runs = (await world.list_runs()).items
        assert {run.run_id for run in runs} >= {"cli-ok", "cli-failed", "cli-hook"}
        assert await world.list_events("cli-ok")
        with pytest.raises(WorldError, match="read-only"):
            await world.request_cancel("cli-hook")
    finally:
        await world.close()


def _can_mount_read_only() -> bool:
    if shutil.which("unshare") is None or sys.platform != "linux":
        return False
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        probe = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount --bind {directory} {directory} && "
             f"mount -o remount,bind,ro {directory} && ! touch {directory}/x"],
            capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_read_only(), reason="needs unshare and mount (root)")
def test_inspect_runs_on_a_read_only_mount(populated_db: str, tmp_path: Path) -> None:
    directory = tmp_path / "mount"
    directory.mkdir()
    shutil.copy(populated_db, directory / "ro.db")
    assert not (directory / "ro.db-wal").exists()  # no WAL side files: immutable needed

    def in_read_only_mount(*args: str) -> subprocess.CompletedProcess[str]:
        command = " ".join([sys.executable, "-m", "worldflow.cli.main", *args])
        script = (f"mount --bind {directory} {directory} && "
                  f"mount -o remount,bind,ro {directory} && {command}")
        return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                               script], capture_output=True, text=True, timeout=60,
                              env=cli_env(None), cwd=os.getcwd())

    listed = in_read_only_mount("inspect", "runs", "--path", str(directory / "ro.db"),
                                "--json")
    assert listed.returncode == 0, listed.stderr
    assert "cli-ok" in listed.stdout and "cli-failed" in listed.stdout
    shown = in_read_only_mount("inspect", "events", "cli-ok", "--path",
                               str(directory / "ro.db"))
    assert shown.returncode == 0, shown.stderr
    cancel = in_read_only_mount("runs", "cancel", "cli-hook", "--path",
                                str(directory / "ro.db"))
    assert cancel.returncode == 1
    assert cancel.stderr.count("\n") == 1 and "read-only" in cancel.stderr


async def test_postgres_connect_timeout_names_host_port_and_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                           ) -> None:
        accepted.append(writer)  # accepts the connection, never says a word

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        world = PostgresWorld(f"postgresql://root@127.0.0.1:{port}/x", connect_timeout=0.3)
        with pytest.raises(WorldError) as info:
            await world.open()
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message and "connect_timeout=0.3s" in message
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
