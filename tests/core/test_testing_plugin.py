"""`worldflow.testing`: the `wf_world` fixture (from the installed pytest plugin, no
conftest) skips durable time, exactly and without real waiting."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import worldflow
from worldflow import (
    RetryableError,
    WorkflowTimeoutError,
    create_hook,
    sleep,
    start,
    step,
    workflow,
)
from worldflow.core.runtime import default_world
from worldflow.testing import testing_world

if TYPE_CHECKING:
    from worldflow.testing import TestingWorld

attempts: dict[str, int] = {}


@step(max_retries=5, backoff="1m")
async def flaky(key: str) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] <= 5:
        raise RetryableError(f"attempt {attempts[key]} failed")
    return f"ok after {attempts[key]}"


@workflow
async def month_then_flaky(key: str) -> str:
    await sleep("30d")
    return await flaky(key)


@workflow(timeout="1h")
async def sleeps_past_its_deadline() -> str:
    await sleep("2h")
    return "too late"


@workflow
async def hourly_ticks(count: int) -> list[str]:
    seen = []
    for _ in range(count):
        await sleep("1h")
        seen.append(worldflow.now().isoformat())
    return seen


@workflow
async def waits_for_hook() -> str:
    hook = create_hook(token=f"approve-{worldflow.get_workflow_metadata().run_id}")
    try:
        return str(await asyncio.wait_for(hook, timeout=86400))
    except TimeoutError:
        return "timed out"


async def test_thirty_day_sleep_and_five_backoffs_end_in_milliseconds(
        wf_world: TestingWorld) -> None:
    assert default_world() is wf_world
    key = uuid.uuid4().hex
    began = time.perf_counter()
    run = await start(month_then_flaky, key)
    assert await run.result(timeout=5) == "ok after 6"
    wall = time.perf_counter() - began
    print(f"30d sleep + 5 retries with 1-minute backoffs: {wall * 1000:.1f} ms wall")
    assert wall < 1.0  # the goal is < 100 ms; the bound leaves room for a loaded machine
    elapsed = wf_world.now() - wf_world.started_at
    assert dt.timedelta(days=30, minutes=5) <= elapsed < dt.timedelta(days=30, minutes=6)
    steps = await run.steps()
    assert [s.status.value for s in steps] == ["completed"]


async def test_workflow_timeout_is_a_durable_deadline_that_is_skipped_to(
        wf_world: TestingWorld) -> None:
    run = await start(sleeps_past_its_deadline)
    with pytest.raises(WorkflowTimeoutError):
        await run.result(timeout=5)
    assert wf_world.now() - wf_world.started_at == dt.timedelta(hours=1)


async def test_each_sleep_ends_at_its_exact_virtual_time(wf_world: TestingWorld) -> None:
    run = await start(hourly_ticks, 3)
    ticks = [dt.datetime.fromisoformat(t) for t in await run.result(timeout=5)]
    assert [t - wf_world.started_at for t in ticks] == [
        dt.timedelta(hours=h) for h in (1, 2, 3)]


async def test_time_does_not_skip_while_a_run_waits_for_a_hook() -> None:
    async with testing_world() as world:
        run = await start(waits_for_hook)
        await world.settle()
        await asyncio.sleep(0.02)
        assert world.now() == world.started_at
        await worldflow.resume_hook(f"approve-{run.run_id}", "yes")
        assert await run.result(timeout=5) == "yes"


async def test_advance_moves_time_by_hand() -> None:
    async with testing_world(auto_skip=False) as world:
        run = await start(waits_for_hook)
        await world.advance("23h")
        assert (await run.status()).value == "running"
        await world.advance("1h")
        assert await run.result(timeout=5) == "timed out"
        assert world.now() - world.started_at == dt.timedelta(hours=24)


async def test_manual_world_does_not_skip_a_sleep_by_itself() -> None:
    async with testing_world(auto_skip=False) as world:
        run = await start(hourly_ticks, 2)
        await world.settle()
        await asyncio.sleep(0.02)
        assert (await run.status()).value == "running"
        await world.advance("2h")
        assert len(await run.result(timeout=5)) == 2


def test_the_readme_example_runs_with_the_installed_plugin_and_no_configuration(
        tmp_path: Path) -> None:
    """Copied into an empty directory, with no conftest, pytest.ini or marks."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Testing workflows that wait for days", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "test_readme_example.py").write_text(example)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "test_readme_example.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
