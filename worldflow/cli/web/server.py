"""`worldflow inspect runs --web`: serve the web UI with uvicorn on 127.0.0.1 (another
address only with `--auth-token`)."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import sys
from typing import TYPE_CHECKING

import uvicorn

from worldflow.cli.errors import CliError
from worldflow.cli.web.app import app

if TYPE_CHECKING:
    from collections.abc import Generator
    from types import FrameType

    from worldflow.cli.web.app import WebUI
    from worldflow.core.world import World

__all__ = ["serve_web"]

HOST = "127.0.0.1"
GRACEFUL_SHUTDOWN_SECONDS = 2
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """uvicorn, stopping on SIGINT/SIGTERM without raising the signal again afterwards,
    so that the command closes its world and exits 0. Stopping, it tells the UI, whose
    live event streams then end within a poll (instead of holding the shutdown)."""

    def __init__(self, config: uvicorn.Config, ui: WebUI) -> None:
        super().__init__(config)
        self.ui = ui

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.ui.stopping = True
        super().handle_exit(sig, frame)

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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int) -> set[str]:
    """The `Host` headers a browser sends for this address (DNS rebinding protection:
    any other name pointed at this address is refused)."""
    shown = f"[{host}]" if ":" in host else host
    hosts = {f"{shown}:{port}"}
    if is_loopback(host):
        hosts |= {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    return hosts


async def serve_web(world: World, label: str, *, port: int = 3456,
                    run_id: str | None = None, host: str = HOST,
                    auth_token: str | None = None) -> None:
    """Serve `app(world)` on `host`:`port` (0: any free port) until SIGINT/SIGTERM.

    The UI shows workflow inputs and outputs and can cancel, retry and resume runs: a
    `host` other than loopback needs `auth_token`. Requests for any other Host than
    the bound address are refused. Prints the URL (with the bound port) before serving.
    """
    if not is_loopback(host) and not auth_token:
        raise CliError(f"binding the web UI to {host} (not loopback) needs --auth-token: "
                       f"anyone who reaches it could read and cancel runs")
    try:
        sock = socket.create_server((host, port), backlog=128,
                                    family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setblocking(False)
        bound = sock.getsockname()[1]
        web = app(world, allowed_hosts=allowed_hosts(host, bound), auth_token=auth_token)
        config = uvicorn.Config(
            web,
            lifespan="off", log_level="warning", access_log=False,
            # a live page's event stream stays open: a stopping server cuts it after
            # this long instead of waiting for the stream's end
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}/"
        if run_id is not None:
            url += f"runs/{run_id}"
        sys.stdout.write(f"worldflow web UI for {label}: {url}\n")
        if auth_token:
            sys.stdout.write("  (open it once with ?token=TOKEN, the --auth-token, or send "
                             "'Authorization: Bearer TOKEN')\n")
        sys.stdout.flush()
        await _Server(config, web.state.web_ui).serve(sockets=[sock])
    finally:
        sock.close()
