"""The main of the worker processes that tests start by path or with ``-m`` (their
spawners put the checkout on PYTHONPATH, so ``tests`` imports from either)::

    if __name__ == "__main__":
        serve_until_sigterm()

The worker opens the world the environment names (``WORKFLOW_TARGET_WORLD``, ...),
works on its queue, prints ``READY`` once its engine runs (the spawner reads that line
before going on), and closes the world cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal

from worldflow import create_world

__all__ = ["serve_until_sigterm"]


async def _serve() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with create_world():
        print("READY", flush=True)
        await stop.wait()


def serve_until_sigterm() -> None:
    """Run the environment's world in this process until SIGTERM (see the module)."""
    asyncio.run(_serve())
