"""Two real processes sharing one SQLite file: A runs the workflow, B (reached only over
HTTP on localhost) runs its steps."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from tests.transports.helpers import wait_until
from worldflow.worlds import create_world

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.abc import Process

ROOT = Path(__file__).resolve().parents[2]
SECRET = "two-process-secret"


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(WORKFLOW_SECRET=SECRET, PYTHONUNBUFFERED="1", LOG_LEVEL="info")
    env.pop("WORKFLOW_TARGET_WORLD", None)
    return env


async def read_line(process: Process) -> dict[str, Any]:
    assert process.stdout is not None
    data = b""
    with anyio.fail_after(60):
        while not data.endswith(b"\n"):
            chunk = await process.stdout.receive(1)
            data += chunk
    return dict(json.loads(data))


@contextlib.asynccontextmanager
async def server(db: Path, log: Path, port: int = 0) -> AsyncIterator[tuple[Process, int]]:
    """Process B: `serve` on the shared database; yields (process, port)."""
    command = [sys.executable, "-m", "tests.transports.remote_server", str(db), str(port)]
    with log.open("ab") as stderr:
        process = await anyio.open_process(command, cwd=ROOT, env=environment(),
                                           stderr=stderr)
    try:
        ready = await read_line(process)
        yield process, int(ready["port"])
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.move_on_after(10):
            await process.wait()
        await process.aclose()


async def open_client(db: Path, url: str, workflow: str, arg: Any, log: Path) -> Process:
    """Process A: starts `workflow` and sends its steps to `url`."""
    command = [sys.executable, "-m", "tests.transports.remote_client", str(db), url,
               workflow, json.dumps(arg)]
    with log.open("ab") as stderr:
        return await anyio.open_process(command, cwd=ROOT, env=environment(), stderr=stderr)


async def finish(process: Process) -> dict[str, Any]:
    try:
        line = await read_line(process)
        with anyio.fail_after(30):
            assert await process.wait() == 0
        return line
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()


async def stored_run(db: Path, run_id: str) -> tuple[Any, list[Any]]:
    world = create_world("sqlite", path=str(db))
    await world.open()
    try:
        return await world.get_run(run_id), await world.list_steps(run_id)
    finally:
        await world.close()


async def test_steps_sent_over_http_run_in_the_other_process(tmp_path: Path) -> None:
    db, log = tmp_path / "shared.db", tmp_path / "processes.log"
    async with server(db, log) as (process_b, port):
        process_a = await open_client(db, f"http://127.0.0.1:{port}", "remote_steps", 4, log)
        started = await read_line(process_a)
        done = await finish(process_a)
        process_b.send_signal(signal.SIGTERM)  # a clean stop: the world closes
        with anyio.fail_after(30):
            assert await process_b.wait() == 0, log.read_text()
    result = done["result"]
    assert [r["i"] for r in result] == [0, 1, 2, 3, 4]
    assert {r["pid"] for r in result} == {process_b.pid}
    assert process_b.pid != started["pid"]
    run, steps = await stored_run(db, started["run_id"])
    assert run.status == "completed"
    assert [s.status for s in steps] == ["completed"] * 6
    assert all(s.attempt == 1 for s in steps)


@pytest.mark.slow
async def test_step_whose_server_is_killed_mid_step_runs_again_on_its_replacement(
        tmp_path: Path) -> None:
    db, log = tmp_path / "shared.db", tmp_path / "processes.log"
    async with server(db, log) as (first_b, port):
        process_a = await open_client(db, f"http://127.0.0.1:{port}", "remote_slow", 2.0, log)
        started = await read_line(process_a)

        async def step_running() -> bool:
            _, steps = await stored_run(db, started["run_id"])
            return bool(steps) and steps[0].status == "running"

        await wait_until(step_running, timeout=30, what="the step to start")
        await anyio.sleep(0.5)  # the step is now sleeping inside the first server
        first_b.kill()
        await first_b.wait()
    async with server(db, log, port) as (second_b, _):
        done = await finish(process_a)
    assert done["result"] == second_b.pid, log.read_text()
    run, (step,) = await stored_run(db, started["run_id"])
    assert run.status == "completed"
    assert step.attempt >= 2  # the killed delivery counted as a failed attempt
