"""Process B of the two-process tests: serves the HTTP transport on a SQLite world.

    python -m tests.transports.remote_server DB_PATH [PORT]

Prints one JSON line, ``{"port": ..., "pid": ...}``, once it listens; stops on SIGTERM.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import anyio

import tests.transports.workflows  # noqa: F401  (registers the t_ steps)
from worldflow.transports.http import serve
from worldflow.worlds import create_world


async def main(path: str, port: str = "0") -> None:
    world = create_world("sqlite", path=path)
    async with anyio.create_task_group() as tg:
        bound = await tg.start(functools.partial(serve, log_level="warning"), world, "127.0.0.1",
                               int(port))
        print(json.dumps({"port": bound, "pid": os.getpid()}), flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:3])
