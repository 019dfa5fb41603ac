"""Hook payloads across a SIGKILL: in order, none lost, none twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.hook_app import collect
from worldflow import create_world, resume_hook, start

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def spawn(db: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "WORKFLOW_TARGET_WORLD": "sqlite", "WORKFLOW_SQLITE_PATH": str(db),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("hook_app.py"))],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    return proc


async def until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_hook_payloads_survive_a_sigkill_in_order_once_each(tmp_path: Path) -> None:
    db = tmp_path / "hooks.db"
    first = spawn(db)
    world = create_world("sqlite", path=str(db))
    await world.open()  # this test process only stores and reads; workers run the run
    try:
        run = await start(collect, "approval-7", 3, world=world)

        async def received(n: int) -> bool:
            events = await world.list_events(run.run_id)
            return sum(e.event_type == "hook_received" for e in events) >= n

        await until(lambda: world.get_hook("approval-7"))
        await resume_hook("approval-7", {"n": 1}, world=world)
        await until(lambda: received(1))
        first.send_signal(signal.SIGKILL)
        first.communicate()
        await resume_hook("approval-7", {"n": 2}, world=world)  # nobody running: inbox
        second = spawn(db)
        try:
            await resume_hook("approval-7", {"n": 3}, world=world)
            finished = await world.wait_run_finished(run.run_id, timeout=30)
        finally:
            second.send_signal(signal.SIGTERM)
            second.communicate(timeout=30)
        assert finished.status == "completed"
        assert await run.result() == [{"n": 1}, {"n": 2}, {"n": 3}]
        events = await world.list_events(run.run_id)
        assert sum(e.event_type == "hook_received" for e in events) == 3
    finally:
        await world.close()
