"""`worldflow inspect runs --web`: serve the web UI with uvicorn on 127.0.0.1."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from typing import TYPE_CHECKING

import uvicorn

from worldflow.cli.errors import CliError
from worldflow.cli.web.app import app

if TYPE_CHECKING:
    from collections.abc import Generator

    from worldflow.core.world import World

__all__ = ["serve_web"]

HOST = "127.0.0.1"
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """uvicorn, stopping on SIGINT/SIGTERM without raising the signal again afterwards,
    so that the command closes its world and exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        try:
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in _HANDLED_SIGNALS}
        except ValueError:  # not the main thread: whoever runs us handles signals
            yield
            return
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


async def serve_web(world: World, label: str, *, port: int = 3456,
                    run_id: str | None = None) -> None:
    """Serve `app(world)` on 127.0.0.1:`port` (0: any free port) until SIGINT/SIGTERM.

    Only the loopback interface: the UI shows workflow inputs and outputs and has no
    authentication. Prints the URL (with the bound port) before serving.
    """
    try:
        sock = socket.create_server((HOST, port), backlog=128)
    except OSError as exc:
        raise CliError(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setblocking(False)
        bound = sock.getsockname()[1]
        config = uvicorn.Config(app(world), lifespan="off", log_level="warning",
                                access_log=False)
        url = f"http://{HOST}:{bound}/"
        if run_id is not None:
            url += f"runs/{run_id}"
        sys.stdout.write(f"worldflow web UI for {label}: {url}\n")
        sys.stdout.flush()
        await _Server(config).serve(sockets=[sock])
    finally:
        sock.close()
