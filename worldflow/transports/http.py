"""The HTTP transport: an ASGI app serving ``/.well-known/workflow/v1/...``.

``app(world)`` is a Starlette application, mountable in any ASGI server or framework::

    POST      /.well-known/workflow/v1/flow             signed   work on a run
    POST      /.well-known/workflow/v1/step             signed   run one step attempt
    POST      /.well-known/workflow/v1/message          signed   send a message to a run
    GET|POST  /.well-known/workflow/v1/webhook/{token}  open     resume a webhook
    HEAD      /.well-known/workflow/v1/webhook/{token}  open     check it (no delivery)

`/flow` and `/step` carry queue deliveries from another process (or a load balancer);
they must be signed with ``WORKFLOW_SECRET`` (see `worldflow.transports.signing`).
Webhook requests come from third parties and are not signed: the token is the
credential (see `worldflow.transports.webhooks`).

Answers: 401 unsigned, badly signed or expired; 400 malformed (not JSON, wrong
fields, no `request_id`); 404 unknown run, workflow, step or token (for `/step`: the
run is not in this world, its workflow or the step is not registered in this process);
409 a request id reused for another body; 410 a webhook whose run has ended;
413 a body over `max_body` (checked on Content-Length and on the bytes read); 503 the
world failed. None of these changes any state: every check runs before the first
write. Errors are JSON: ``{"error": "<code>", "message": "<what to do>"}``.

Replays: a signed body carries a `request_id`, and the answer to each id is recorded
for as long as its signature is valid; the same request again (sequentially or while the
first is still running) gets the same answer and runs nothing. The record is per
process: several processes behind a load balancer each keep their own (see
`worldflow.transports.deliveries`).

A process that runs steps for others (``worldflow serve``, or `serve()` below)
receives `/step` requests; a process that sends its steps there installs
`HttpStepRunner` with `use_http_steps(world, url)`. A `/step` request carrying a trace
context (``traceparent``/``tracestate`` headers, sent by `HttpStepRunner` when
OpenTelemetry is active) runs its step body under a ``step NAME`` span in that trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from typing import TYPE_CHECKING

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from worldflow.core import telemetry
from worldflow.transports.client import HttpStepRunner, request_flow, use_http_steps
from worldflow.transports.deliveries import (
    DEFAULT_MAX_ENTRIES,
    DeliveryLog,
)
from worldflow.transports.endpoints import Endpoints
from worldflow.transports.messages import (
    FLOW_PATH,
    MESSAGE_PATH,
    STEP_PATH,
    WEBHOOK_ROUTE,
)
from worldflow.transports.signing import resolve_secret

if TYPE_CHECKING:
    from collections.abc import Generator

    from anyio.abc import TaskStatus

    from worldflow.core.world import World

__all__ = ["DEFAULT_MAX_BODY", "HttpStepRunner", "app", "request_flow", "serve",
           "use_http_steps"]

logger = logging.getLogger("worldflow.http")

DEFAULT_MAX_BODY = 1024 * 1024
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def app(world: World, *, secret: str | bytes | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        max_recorded_deliveries: int = DEFAULT_MAX_ENTRIES) -> Starlette:
    """The ASGI app of the HTTP transport for `world` (see the module docstring).

    `secret` signs `/flow` and `/step` (default: ``WORKFLOW_SECRET``; with neither,
    those endpoints answer 401 to everything). `max_body` caps every request body
    (bytes; default 1 MiB). `max_recorded_deliveries` bounds the answers kept against
    replays (see `worldflow.transports.deliveries`; size it for the deliveries this
    process answers in ten minutes). Webhooks are resumed in `world`; `/step` runs the step in
    this process; `/flow` wakes `world`'s engine, so the world must be started for it.
    """
    if not isinstance(max_body, int) or max_body < 1:
        raise ValueError(f"max_body must be a positive number of bytes, got {max_body!r}")
    telemetry.load()  # a step server may have no engine, which would look for it
    transport = Endpoints(world, resolve_secret(secret), max_body,
                          DeliveryLog(max_recorded_deliveries))
    application = Starlette(routes=[
        Route(FLOW_PATH, transport.flow, methods=["POST"]),
        Route(STEP_PATH, transport.step, methods=["POST"]),
        Route(MESSAGE_PATH, transport.message, methods=["POST"]),
        Route(WEBHOOK_ROUTE, transport.webhook, methods=["GET", "POST"]),
    ])
    # no redirect from ".../webhook" to ".../webhook/": a request names its token or is 404
    application.router.redirect_slashes = False
    application.state.worldflow = transport
    return application


class _Server(uvicorn.Server):
    """uvicorn, stopping on SIGINT/SIGTERM without re-raising the signal afterwards,
    so that `serve` can close its world cleanly."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        try:
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in _HANDLED_SIGNALS}
        except ValueError:  # not the main thread: the caller handles signals
            yield
            return
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


async def serve(world: World, host: str = "127.0.0.1", port: int = 3001, *,
                secret: str | bytes | None = None, max_body: int = DEFAULT_MAX_BODY,
                log_level: str = "info",
                task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    """Start `world` (so this process also works on its queue) and serve `app(world)`
    on `host:port` until SIGINT/SIGTERM or cancellation; then close the world.

    The socket is bound before the world starts, so a port in use fails at once
    (`OSError`). ``await tg.start(serve, world, host, 0)`` returns the bound port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    try:
        sock.setblocking(False)
        bound_port: int = sock.getsockname()[1]
        config = uvicorn.Config(app(world, secret=secret, max_body=max_body), lifespan="off",
                                log_level=log_level, timeout_graceful_shutdown=30)
        server = _Server(config)
        await world.start()
        try:
            logger.info("worldflow serving on http://%s:%d", host, bound_port)
            serving = asyncio.create_task(server.serve(sockets=[sock]),
                                          name="worldflow http server")
            task_status.started(bound_port)
            try:
                await asyncio.shield(serving)
            finally:
                if not serving.done():  # cancelled: stop like on SIGTERM, then go
                    server.should_exit = True
                    with anyio.CancelScope(shield=True):
                        await serving
        finally:
            with anyio.CancelScope(shield=True):
                await world.close()
    finally:
        sock.close()
