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
import functools
import hashlib
import logging
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from worldflow.core import telemetry
from worldflow.core.context import WorkflowMetadata
from worldflow.core.events import encode_event
from worldflow.core.records import step_id_for
from worldflow.core.registry import get_step, get_workflow
from worldflow.core.runtime import engine_for
from worldflow.core.serde import encode_value
from worldflow.core.steps import run_step_attempt
from worldflow.errors import HookNotFoundError, RunFinishedError, RunNotFoundError, WorldError
from worldflow.transports.client import HttpStepRunner, request_flow, use_http_steps
from worldflow.transports.deliveries import (
    DEFAULT_MAX_ENTRIES,
    Answer,
    DeliveryLog,
    RequestIdReusedError,
)
from worldflow.transports.messages import (
    FLOW_PATH,
    MESSAGE_PATH,
    REQUEST_ID_FIELD,
    STEP_PATH,
    WEBHOOK_ROUTE,
    FlowRequest,
    MessageRequest,
    StepArgs,
    StepRequest,
)
from worldflow.transports.signing import MAX_AGE, SignatureError, resolve_secret, verify
from worldflow.transports.webhooks import WebhookRequest, WebhookResponse, find_webhook_response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

    from anyio.abc import TaskStatus

    from worldflow.core.registry import StepDef
    from worldflow.core.steps import StepOutcome
    from worldflow.core.world import World

__all__ = ["DEFAULT_MAX_BODY", "HttpStepRunner", "app", "request_flow", "serve",
           "use_http_steps"]

logger = logging.getLogger("worldflow.http")

DEFAULT_MAX_BODY = 1024 * 1024
_MAX_TOKEN = 512
_json = msgspec.json.Encoder()
_step_decoder = msgspec.json.Decoder(StepRequest)
_args_decoder = msgspec.json.Decoder(StepArgs)
_flow_decoder = msgspec.json.Decoder(FlowRequest)
_message_decoder = msgspec.json.Decoder(MessageRequest)
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class HTTPError(Exception):
    """An answer other than success, raised by a handler before it changes anything."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _json_response(status: int, content: Any, headers: dict[str, str] | None = None
                   ) -> Response:
    return Response(_json.encode(content), status, headers, media_type="application/json")


def _error_response(status: int, code: str, message: str) -> Response:
    return _json_response(status, {"error": code, "message": message})


def _answers_errors(handler: Callable[[Endpoints, Request], Awaitable[Response]]
                    ) -> Callable[[Endpoints, Request], Awaitable[Response]]:
    """Turn a handler's `HTTPError` (and world failures) into JSON answers."""

    @functools.wraps(handler)
    async def wrapper(self: Endpoints, request: Request) -> Response:
        try:
            return await handler(self, request)
        except HTTPError as exc:
            return _error_response(exc.status, exc.code, exc.message)
        except ClientDisconnect:
            return _error_response(400, "disconnected", "the client went away")
        except WorldError as exc:
            logger.warning("%s %s: the world failed: %s", request.method, request.url.path, exc)
            return _error_response(503, "world_unavailable",
                                   "storage is unavailable; try again later")
    return wrapper


class Endpoints:
    """The endpoints of `app()`, bound to one world."""

    def __init__(self, world: World, secret: bytes | None, max_body: int,
                 deliveries: DeliveryLog) -> None:
        self.world = world
        self.secret = secret
        self.max_body = max_body
        #: answers to recent signed deliveries, against replays (per process)
        self.deliveries = deliveries
        self._step_slots = asyncio.Semaphore(world.queue_concurrency)
        #: (token, run_id, correlation_id) -> the webhook's response (None: not a webhook);
        #: static once the hook exists, since the two are committed together
        self._webhooks: dict[tuple[str, str, str], WebhookResponse | None] = {}

    # -- reading requests ----------------------------------------------------------
    async def read_body(self, request: Request) -> bytes:
        """The body, refused with 413 once it is larger than `max_body`."""
        length = request.headers.get("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit()):
                raise HTTPError(400, "bad_request", "Content-Length is not a number")
            if int(length) > self.max_body:
                raise HTTPError(413, "too_large", f"the body is over {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:  # a missing or lying Content-Length
                raise HTTPError(413, "too_large", f"the body is over {self.max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_signed(self, request: Request) -> tuple[bytes, int]:
        """The body and the unix time it was signed at, refused with 401 unless signed."""
        body = await self.read_body(request)
        try:
            signed_at = verify(request.headers, body, self.secret)
        except SignatureError as exc:
            raise HTTPError(401, "unauthorized", str(exc)) from None
        return body, signed_at

    @staticmethod
    def decode(decoder: msgspec.json.Decoder[Any], body: bytes, what: str) -> Any:
        try:
            return decoder.decode(body)
        except (msgspec.DecodeError, RecursionError) as exc:
            hint = ""
            if f"missing required field `{REQUEST_ID_FIELD}`" in str(exc):
                hint = ("; the sender uses a version of worldflow from before request ids "
                        "(replay protection): upgrade it")
            raise HTTPError(400, "bad_request", f"malformed {what} request: {exc}{hint}"
                            ) from None

    async def once(self, kind: str, request_id: str, body: bytes, signed_at: int,
                   handle: Callable[[], Awaitable[Response]]) -> Response:
        """Answer the delivery `request_id` by `handle()` the first time, and with the
        same answer every time it comes again while its signature is valid."""

        async def answer() -> Answer:
            try:
                response = await handle()
            except HTTPError as exc:  # refusals are answers too: recorded like any other
                response = _error_response(exc.status, exc.code, exc.message)
            return Answer(response.status_code, bytes(response.body),
                          response.media_type or "application/json")

        # kept until the signature expires (it may be dated ahead of our clock)
        ttl = max(signed_at - time.time(), 0.0) + MAX_AGE
        try:
            recorded = await self.deliveries.once(kind, request_id,
                                                  hashlib.sha256(body).digest(), ttl, answer)
        except RequestIdReusedError as exc:
            raise HTTPError(409, "request_id_reused", str(exc)) from None
        return Response(recorded.body, recorded.status, media_type=recorded.media_type)

    # -- /flow ---------------------------------------------------------------------
    @_answers_errors
    async def flow(self, request: Request) -> Response:
        body, signed_at = await self.read_signed(request)
        message: FlowRequest = self.decode(_flow_decoder, body, "flow")
        return await self.once("flow", message.request_id, body, signed_at,
                               functools.partial(self._flow, message))

    async def _flow(self, message: FlowRequest) -> Response:
        run = await self.world.get_run(message.run_id)
        if run is None:
            raise HTTPError(404, "run_not_found", f"no run {message.run_id!r} in this world")
        if get_workflow(run.workflow_name) is None:
            raise _workflow_not_registered(run.workflow_name)
        if run.status.is_terminal:
            return _json_response(200, {"run_id": run.run_id, "status": run.status.value})
        if engine_for(self.world) is None:
            raise HTTPError(503, "not_processing",
                            "this process does not process runs: start its world first")
        self.world.notify_work()
        return _json_response(202, {"run_id": run.run_id, "status": "accepted"})

    # -- /message -------------------------------------------------------------------
    @_answers_errors
    async def message(self, request: Request) -> Response:
        body, signed_at = await self.read_signed(request)
        message: MessageRequest = self.decode(_message_decoder, body, "message")
        return await self.once("message", message.request_id, body, signed_at,
                               functools.partial(self._message, message))

    async def _message(self, message: MessageRequest) -> Response:
        try:
            await self.world.send_message(message.run_id, message.topic, message.message)
        except RunNotFoundError:
            raise HTTPError(404, "run_not_found",
                            f"no run {message.run_id!r} in this world") from None
        except RunFinishedError as exc:
            raise HTTPError(409, "run_finished", str(exc)) from None
        return _json_response(202, {"run_id": message.run_id, "topic": message.topic,
                                    "status": "queued"})

    # -- /step ---------------------------------------------------------------------
    @_answers_errors
    async def step(self, request: Request) -> Response:
        body, signed_at = await self.read_signed(request)
        message: StepRequest = self.decode(_step_decoder, body, "step")
        self.decode(_args_decoder, message.input, "step")  # args shaped as stored
        trace_context = (telemetry.carrier_from_headers(request.headers)
                         if telemetry.active else {})
        return await self.once("step", message.request_id, body, signed_at,
                               functools.partial(self._step, message, trace_context))

    async def _step(self, message: StepRequest, trace_context: dict[str, str]) -> Response:
        defn = get_step(message.step_name)
        if defn is None:
            raise HTTPError(404, "step_not_found",
                            f"step {message.step_name!r} is not registered in this process; "
                            f"import the module that defines it")
        run = await self.world.get_run(message.run_id)
        if run is None:
            raise HTTPError(404, "run_not_found", f"no run {message.run_id!r} in this world; "
                            f"serve the world that holds the run")
        if run.workflow_name != message.workflow_name:
            raise HTTPError(404, "workflow_not_found",
                            f"run {run.run_id!r} is a run of workflow {run.workflow_name!r}, "
                            f"not {message.workflow_name!r}")
        if get_workflow(run.workflow_name) is None:
            raise _workflow_not_registered(run.workflow_name)
        workflow = WorkflowMetadata(message.run_id, message.workflow_name,
                                    message.workflow_started_at or message.started_at)
        engine = engine_for(self.world)
        slots = engine.step_slots if engine is not None else self._step_slots
        async with slots:
            span = (telemetry.start_remote_step_span(
                trace_context, message.run_id, message.workflow_name, message.step_name,
                step_id_for(message.run_id, message.correlation_id), message.attempt)
                if trace_context else None)
            if span is None:
                outcome = await run_step_attempt(defn, message.correlation_id,
                                                 message.attempt, message.input, workflow,
                                                 self.world, message.started_at)
            else:
                outcome = await self._traced_step(span, defn, message, workflow)
        return Response(encode_event(outcome), 200, media_type="application/json")

    async def _traced_step(self, span: telemetry.StepSpan, defn: StepDef,
                           message: StepRequest, workflow: WorkflowMetadata) -> StepOutcome:
        """The attempt under the sender's trace: its span is current in the step body."""
        outcome: StepOutcome | None = None
        try:
            with telemetry.step_span_current(span):
                outcome = await run_step_attempt(defn, message.correlation_id,
                                                 message.attempt, message.input, workflow,
                                                 self.world, message.started_at)
            return outcome
        finally:
            telemetry.end_step_span(span, outcome)

    # -- /webhook/{token} ----------------------------------------------------------------
    @_answers_errors
    async def webhook(self, request: Request) -> Response:
        token: str = request.path_params["token"]
        if not token or len(token) > _MAX_TOKEN or "\x00" in token:
            raise HTTPError(404, "webhook_not_found", "no webhook has this token")
        response = await self._webhook_response(token)
        if request.method == "HEAD":  # a liveness check: nothing is delivered
            return Response(status_code=response.status, headers=response.headers)
        body = await self.read_body(request)
        payload = WebhookRequest(request.method, _headers(request), dict(request.query_params),
                                 body, request.scope.get("query_string", b"").decode("latin-1"))
        encoded = encode_value(payload, what="webhook request")
        try:
            await self.world.resume_hook(token, encoded)
        except HookNotFoundError:
            raise HTTPError(404, "webhook_not_found", "no webhook has this token") from None
        except RunFinishedError:
            raise _run_ended() from None
        return Response(response.body, response.status, response.headers)

    async def _webhook_response(self, token: str) -> WebhookResponse:
        hook = await self.world.get_hook(token)
        if hook is None:
            raise HTTPError(404, "webhook_not_found", "no webhook has this token")
        key = (hook.token, hook.run_id, hook.correlation_id)
        if key in self._webhooks:
            response = self._webhooks[key]
        else:
            response = await find_webhook_response(self.world, hook)
            if len(self._webhooks) >= 4096:
                self._webhooks.clear()
            self._webhooks[key] = response
        if response is None:  # a hook from create_hook(): not reachable over HTTP
            raise HTTPError(404, "webhook_not_found", "no webhook has this token")
        if hook.status != "active":
            raise _run_ended()
        return response


def _workflow_not_registered(name: str) -> HTTPError:
    return HTTPError(404, "workflow_not_found",
                     f"workflow {name!r} is not registered in this process; import the "
                     f"module that defines it")


def _run_ended() -> HTTPError:
    return HTTPError(410, "webhook_gone", "this webhook's run has ended; it takes no more "
                                          "requests")


def _headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in request.headers.raw:
        name = raw_name.decode("latin-1").lower()
        try:
            value = raw_value.decode()
        except UnicodeDecodeError:
            value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


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
