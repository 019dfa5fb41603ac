"""Running the `worldflow` command as a subprocess, as a user would."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

T = TypeVar("T")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli_env(db_path: str | None, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("WORKFLOW_", "DATABASE_URL"))}
    if db_path is not None:
        env.update(WORKFLOW_TARGET_WORLD="sqlite", WORKFLOW_SQLITE_PATH=db_path)
    env.update(extra)
    return env


def run_cli(db_path: str | None, *args: str, timeout: float = 60, **env: str) -> Result:
    proc = subprocess.run([sys.executable, "-m", "worldflow.cli.main", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=cli_env(db_path, **env))
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_async(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
    """`asyncio.run(fn(*args, **kwargs))` in a thread of its own: works even where an event loop is
    already running in this thread (Playwright's sync API keeps one)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(fn(*args, **kwargs))).result()
