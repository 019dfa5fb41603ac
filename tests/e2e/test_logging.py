"""LOG_LEVEL and LOG_FORMAT, as a user sets them: in a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import asyncio
from worldflow import create_world, start, step, workflow

@step
async def double(x: int) -> int:
    return 2 * x

@step(max_retries=0)
async def explode() -> None:
    raise ValueError("kaboom")

@workflow
async def ok(x: int) -> int:
    return await double(x)

@workflow
async def bad() -> None:
    await explode()

async def main():
    async with create_world("memory") as world:
        await (await start(ok, 2, world=world, run_id="log-ok")).result()
        try:
            await (await start(bad, world=world, run_id="log-bad")).result()
        except Exception:
            pass

asyncio.run(main())
"""


def run_with(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT], env={**os.environ, **env},
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return done.stderr


def test_debug_json_logs_every_event_with_run_step_and_attempt() -> None:
    lines = [json.loads(line) for line in run_with(
        {"LOG_LEVEL": "debug", "LOG_FORMAT": "json"}).splitlines() if line.strip()]
    events = [line for line in lines if line["logger"] == "worldflow.events"]
    assert {e["event_type"] for e in events if e["run_id"] == "log-ok"} == {
        "run_started", "step_started", "step_completed", "run_completed"}
    started = next(e for e in events if e["event_type"] == "step_started")
    assert started["step_name"] == "double" and started["attempt"] == 1
    assert started["correlation_id"] == "1"


def test_info_logs_run_starts_ends_and_failures_only() -> None:
    text = run_with({"LOG_LEVEL": "info"})
    assert "run log-ok: started workflow ok" in text
    assert "run log-ok: completed" in text
    assert "run log-bad: failed: StepFailedError" in text
    assert "step_started" not in text
