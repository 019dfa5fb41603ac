"""Child workflows and messages across a SIGKILL, in real worker processes: the parent
resumes waiting for the same child, and each message is received once, in order."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.compose_app import parent
from worldflow import create_world, send, start

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def spawn(env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("compose_app.py"))],
                            env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    return proc


async def until(predicate: Any, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_parent_and_child_survive_a_sigkill_with_messages_once_each(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if kind == "sqlite":
        env = {"WORKFLOW_TARGET_WORLD": "sqlite", "WORKFLOW_SQLITE_PATH": str(tmp_path / "c.db")}
        world = create_world("sqlite", path=env["WORKFLOW_SQLITE_PATH"])
    else:
        url = request.getfixturevalue("postgres_url")
        prefix = "e" + uuid.uuid4().hex[:10]
        env = {"WORKFLOW_TARGET_WORLD": "postgres", "WORKFLOW_POSTGRES_URL": url,
               "WORKFLOW_POSTGRES_JOB_PREFIX": prefix}
        world = create_world("postgres", connection_string=url, job_prefix=prefix)
    await world.open()  # this process only stores and reads; the workers run the runs
    first = spawn(env)
    try:
        run = await start(parent, 7, world=world)
        child_id = f"{run.run_id}:1"

        async def child_waits() -> bool:
            events = await world.list_events(child_id)
            return any(e.event_type == "run_started" for e in events)

        async def child_received(n: int) -> bool:
            events = await world.list_events(child_id)
            return sum(e.event_type == "message_received" for e in events) >= n

        await until(child_waits)
        await send(child_id, "one", world=world)
        await until(lambda: child_received(1))
        first.send_signal(signal.SIGKILL)
        first.communicate()
        await send(child_id, "two", world=world)  # nobody running: kept in the inbox
        second = spawn(env)
        try:
            finished = await world.wait_run_finished(run.run_id, timeout=60)
        finally:
            second.send_signal(signal.SIGTERM)
            second.communicate(timeout=30)
        assert finished.status == "completed"
        assert await run.result() == {"n": 7, "messages": ["one", "two"]}
        # (the session's database holds other tests' runs: look the child up by id; the
        # parent's log below shows it started one child)
        child = await world.get_run(child_id)
        assert child is not None and child.parent_run_id == run.run_id
        assert child.status == "completed"
        kinds = [e.event_type for e in await world.list_events(child_id)]
        assert kinds.count("message_received") == 2
        parent_kinds = [e.event_type for e in await world.list_events(run.run_id)]
        assert parent_kinds.count("child_started") == 1
        assert parent_kinds.count("child_ended") == 1
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
        await world.close()
