"""The main of the worker processes that tests start by path or with ``-m`` (their
spawners put the checkout on PYTHONPATH, so ``tests`` imports from either)::

    if __name__ == "__main__":
        serve_until_sigterm()

The worker opens the world the environment names (``WORKFLOW_TARGET_WORLD``, ...),
works on its queue, prints ``READY`` once its engine runs (the spawner reads that line
before going on), and closes the world cleanly on SIGTERM. `finish` is the spawner's
side for workers that end by themselves: it waits for the exit and reads the one
``DONE <json>`` line the worker printed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from typing import Any

from worldflow import create_world

__all__ = ["finish", "serve_until_sigterm"]


async def _serve() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with create_world():
        print("READY", flush=True)
        await stop.wait()


def serve_until_sigterm() -> None:
    """Run the environment's world in this process until SIGTERM (see the module)."""
    asyncio.run(_serve())


def finish(proc: subprocess.Popen[str], timeout: float) -> Any:
    """Wait for a worker to exit 0 and return what it printed as ``DONE <json>``."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        import pytest  # the spawner's side only: the workers themselves do not need it

        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the worker did not finish within {timeout}s: {err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    done = [line for line in out.splitlines() if line.startswith("DONE ")]
    assert len(done) == 1, out + err[-3000:]
    return json.loads(done[0].removeprefix("DONE "))
