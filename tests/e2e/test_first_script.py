"""The first script a newcomer writes, run as its own process on every world: it uses
the default world (no `create_world`), prints the result and must exit at once, also
after a second `asyncio.run()` in the same process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import asyncio
    from worldflow import workflow, step, start

    @step
    async def double(x: int) -> int:
        return 2 * x

    @workflow
    async def twice(x: int) -> int:
        return await double(await double(x))

    async def main(x):
        run = await start(twice, x)
        print("result:", await run.result(), flush=True)

    asyncio.run(main(1))
    asyncio.run(main(2))   # a second loop in the same process works too
""")

UNCLOSED_WORLD = textwrap.dedent("""
    import asyncio
    from worldflow import workflow, step, start, create_world

    @step
    async def double(x: int) -> int:
        return 2 * x

    @workflow
    async def twice(x: int) -> int:
        return await double(await double(x))

    async def main():
        world = create_world()
        await world.start()          # started, never closed: the loop's end closes it
        run = await start(twice, 5, world=world)
        print("result:", await run.result(), flush=True)

    asyncio.run(main())
""")


def run_script(source: str, tmp_path: Path, env_overrides: dict[str, str]) -> tuple[str, float]:
    script = tmp_path / "first.py"
    script.write_text(source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_")}
    env.update(env_overrides)
    began = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - began
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stdout, elapsed


@pytest.mark.parametrize("world", ["memory", "sqlite", "postgres"])
def test_a_plain_script_on_the_default_world_prints_and_exits(
        world: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = {"WORKFLOW_TARGET_WORLD": world}
    if world == "postgres":
        env["WORKFLOW_POSTGRES_URL"] = request.getfixturevalue("postgres_url")
        env["WORKFLOW_POSTGRES_JOB_PREFIX"] = f"first{os.getpid()}"
    stdout, elapsed = run_script(SCRIPT, tmp_path, env)
    assert stdout.splitlines() == ["result: 4", "result: 8"]
    assert elapsed < 30  # a hang is killed by the 60 s timeout; this bounds a slow exit
    if world == "sqlite":
        assert (tmp_path / ".worldflow" / "worldflow.db").exists()


def test_a_started_world_never_closed_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    stdout, _ = run_script(UNCLOSED_WORLD, tmp_path,
                           {"WORKFLOW_SQLITE_PATH": str(tmp_path / "w.db")})
    assert stdout.splitlines() == ["result: 20"]
