"""The endpoints of the HTTP transport (`worldflow.transports.http` builds the ASGI app
from them and documents the protocol): reading, size-capping and verifying request
bodies, answering each delivery once (`worldflow.transports.deliveries`), and the
`/flow`, `/message`, `/step` and webhook handlers, whose errors become JSON answers
with a status and a code.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from worldflow.core import telemetry
from worldflow.core.context import WorkflowMetadata
from worldflow.core.events import encode_event
from worldflow.core.records import step_id_for
from worldflow.core.registry import get_step, get_workflow
from worldflow.core.runtime import engine_for
from worldflow.core.serde import encode_value
from worldflow.core.steps import run_step_attempt
from worldflow.errors import HookNotFoundError, RunFinishedError, RunNotFoundError, WorldError
from worldflow.transports.deliveries import (
    Answer,
    DeliveryLog,
    RequestIdReusedError,
)
from worldflow.transports.messages import (
    REQUEST_ID_FIELD,
    FlowRequest,
    MessageRequest,
    StepArgs,
    StepRequest,
)
from worldflow.transports.signing import MAX_AGE, SignatureError, verify
from worldflow.transports.webhooks import WebhookRequest, WebhookResponse, find_webhook_response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from worldflow.core.registry import StepDef
    from worldflow.core.steps import StepOutcome
    from worldflow.core.world import World

__all__ = ["Endpoints", "HTTPError"]

logger = logging.getLogger("worldflow.http")

_MAX_TOKEN = 512
_json = msgspec.json.Encoder()
_step_decoder = msgspec.json.Decoder(StepRequest)
_args_decoder = msgspec.json.Decoder(StepArgs)
_flow_decoder = msgspec.json.Decoder(FlowRequest)
_message_decoder = msgspec.json.Decoder(MessageRequest)


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
