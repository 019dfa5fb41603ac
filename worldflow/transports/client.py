"""Sending work to another process over HTTP: step attempts (`POST /step`) and
wake-ups of runs (`POST /flow`, `request_flow`).

``use_http_steps(world, "http://workers:3001")`` makes the engine of a started world
send each step attempt, signed, to that server (``worldflow serve``, or any process
serving `worldflow.transports.http.app`), which runs it and answers its outcome. The
run's workflow, its log and its leases stay in this process; only step bodies move.

Nothing is lost when the server cannot be reached: a connection failure, a timeout,
a 5xx, a 401 (secrets differ) or a 404 (the step is not deployed there yet) becomes
a `step_retrying` outcome with a short backoff (doubling from `retry_delay` up to
`max_retry_delay`), and the attempt is sent again, for as long as it takes. Such a
failure is recorded like a failed attempt (it shows in the step's retry history and
raises its attempt number, so it uses up `max_retries` for later errors of the step
itself), but it never fails the step. A request the
server refuses as malformed or too large (400, 413) can never succeed: the step
fails (fatally) with the server's message. Execution is at-least-once: if an answer
is lost after the step ran, the step runs again.

Each request carries a new `request_id` (one per delivery attempt, so a retried
attempt is a new delivery); the server answers a repeat of the same id (a replay, or
a proxy resending it) from its record instead of running the step again.

With OpenTelemetry active, each request also carries the attempt's trace context
(``traceparent``/``tracestate`` headers, unsigned: they only place spans), and the
server runs the step body under it (see `worldflow.core.telemetry`).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from worldflow.core import telemetry
from worldflow.core.events import (
    ErrorInfo,
    StepCompleted,
    StepFailed,
    StepRetrying,
    decode_event,
)
from worldflow.core.runtime import engine_for
from worldflow.transports.messages import (
    FLOW_PATH,
    STEP_PATH,
    FlowRequest,
    StepRequest,
    new_request_id,
)
from worldflow.transports.signing import resolve_secret, signature_headers

if TYPE_CHECKING:
    from msgspec import Raw

    from worldflow.core.context import WorkflowMetadata
    from worldflow.core.registry import StepDef
    from worldflow.core.steps import StepOutcome
    from worldflow.core.world import World

__all__ = ["HttpStepRunner", "request_flow", "use_http_steps"]

logger = logging.getLogger("worldflow.http")

_encoder = msgspec.json.Encoder()


class HttpStepRunner:
    """A step runner (see `worldflow.core.steps.StepRunner`) that sends each attempt to
    `url` (a server's base URL, with any mount prefix) and returns its outcome.

    `secret` defaults to ``WORKFLOW_SECRET``. `timeout` bounds the wait for one answer
    in seconds (default: the step's own timeout plus 30s; None without one). Pass
    `transport` to use another httpx transport (e.g. ``httpx.ASGITransport`` in tests).
    Call `aclose()` when done.
    """

    def __init__(self, url: str, secret: str | bytes | None = None, *,
                 timeout: float | None = None, connect_timeout: float = 10.0,
                 retry_delay: float = 0.5, max_retry_delay: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        key = resolve_secret(secret)
        if key is None:
            raise ValueError("HttpStepRunner needs a secret: pass secret=... or set "
                             "WORKFLOW_SECRET (the server must use the same one)")
        url = url.rstrip("/")
        self.url = url if url.endswith(STEP_PATH) else url + STEP_PATH
        self._secret = key
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(transport=self._transport)
        return self._client

    async def aclose(self) -> None:
        """Close the connection pool (the runner opens a new one if used again)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __call__(self, step: StepDef, cid: str, attempt: int, input: Raw,
                       workflow: WorkflowMetadata, world: World,
                       started_at: dt.datetime) -> StepOutcome:
        body = _encoder.encode(StepRequest(
            request_id=new_request_id(), run_id=workflow.run_id,
            workflow_name=workflow.workflow_name, correlation_id=cid, step_name=step.name,
            attempt=attempt, input=input, started_at=started_at,
            workflow_started_at=workflow.started_at))
        headers = signature_headers(body, self._secret)
        headers["content-type"] = "application/json"
        if telemetry.active:  # the step span, current here: the server's is its child
            headers.update(telemetry.current_carrier())
        read = self.timeout
        if read is None and step.timeout is not None:
            read = step.timeout + 30.0
        timeout = httpx.Timeout(read, connect=self.connect_timeout)
        try:
            response = await self._http().post(self.url, content=body, headers=headers,
                                               timeout=timeout)
        except httpx.HTTPError as exc:
            return self._retry(world, step, cid, attempt, f"could not reach {self.url}: "
                               f"{type(exc).__name__}: {exc}")
        if response.status_code == 200:
            outcome = _outcome(response.content, step, cid, attempt)
            if outcome is not None:
                return outcome
            return self._retry(world, step, cid, attempt, f"{self.url} answered 200 without a "
                               f"valid outcome of attempt {attempt}")
        detail = _message(response)
        if response.status_code in (400, 413):
            return StepFailed(cid, step.name, attempt, ErrorInfo(
                "StepTransportError", f"{self.url} refused step {step.name!r} "
                f"({response.status_code}): {detail}", None, fatal=True))
        return self._retry(world, step, cid, attempt,
                           f"{self.url} answered {response.status_code}: {detail}")

    def _retry(self, world: World, step: StepDef, cid: str, attempt: int,
               message: str) -> StepRetrying:
        delay = min(self.max_retry_delay, self.retry_delay * 2 ** min(attempt - 1, 30))
        logger.warning("step %s (attempt %d) not run remotely: %s; retrying in %gs",
                       step.name, attempt, message, delay)
        retry_at = world.now() + dt.timedelta(seconds=delay)
        return StepRetrying(cid, step.name, attempt, ErrorInfo("StepTransportError", message),
                            retry_at)


def _outcome(content: bytes, step: StepDef, cid: str, attempt: int) -> StepOutcome | None:
    try:
        event = decode_event(content)
    except msgspec.DecodeError:
        return None
    if not isinstance(event, StepCompleted | StepFailed | StepRetrying):
        return None
    if (event.correlation_id, event.step_name, event.attempt) != (cid, step.name, attempt):
        return None
    return event


def _message(response: httpx.Response) -> str:
    try:
        data: Any = msgspec.json.decode(response.content)
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])
    except msgspec.DecodeError:
        pass
    return response.text[:200] or response.reason_phrase


async def request_flow(url: str, run_id: str, secret: str | bytes | None = None, *,
                       timeout: float = 30.0,
                       transport: httpx.AsyncBaseTransport | None = None) -> httpx.Response:
    """Ask the server at `url` (its base URL) to work on run `run_id` now: a signed
    ``POST /flow`` with a new request id. Returns the answer (202 accepted, 200 the run
    has ended with its status, 404 unknown run or workflow there, 503 not processing);
    raises `httpx.HTTPError` if the server cannot be reached. `secret` defaults to
    ``WORKFLOW_SECRET``."""
    key = resolve_secret(secret)
    if key is None:
        raise ValueError("request_flow() needs a secret: pass secret=... or set "
                         "WORKFLOW_SECRET (the server must use the same one)")
    base = url.rstrip("/")
    target = base if base.endswith(FLOW_PATH) else base + FLOW_PATH
    body = _encoder.encode(FlowRequest(request_id=new_request_id(), run_id=run_id))
    headers = signature_headers(body, key)
    headers["content-type"] = "application/json"
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
        return await client.post(target, content=body, headers=headers)


def use_http_steps(world: World, url: str, secret: str | bytes | None = None,
                   **options: Any) -> HttpStepRunner:
    """Send the steps of runs processed by the started `world` in this process to the
    server at `url` (see `HttpStepRunner` for `options`). Returns the runner (close it
    with `aclose()`). Install it again after restarting the world."""
    engine = engine_for(world)
    if engine is None:
        raise RuntimeError("use_http_steps() needs a started world: call it inside "
                           "`async with world:`")
    runner = HttpStepRunner(url, secret, **options)
    engine.step_runner = runner
    return runner
