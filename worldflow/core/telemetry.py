"""OpenTelemetry spans of runs and step attempts (the optional ``otel`` extra).

With ``opentelemetry-api`` installed (``pip install 'worldflow[otel]'``) each run is a
span ``workflow NAME`` and each step attempt a child span ``step NAME``. Without it
(or with ``WORKFLOW_OTEL=0``) every function here is a no-op: OpenTelemetry is
imported once, lazily, by `load()`, and the engine's hot paths check the one boolean
`active` before calling anything else here. With the API but no SDK provider (or a
run span that is sampled out) a run's span is not recorded, its actor keeps none, and
its steps cost one ``is None`` check.

Trace context. `start()` stores its caller's context (W3C ``traceparent`` and
``tracestate``, through OpenTelemetry's global propagator) in the run's
``run_created`` event. Every process that executes the run continues it from there:
each time an actor holds the run (from its claim to its end, or until it gives the
run back to wait, or loses it) is one *segment*, a ``workflow NAME`` span whose
parent is the stored context. A run that waits, crashes or moves to another process
therefore has several segments, siblings under the caller's span, all in the caller's
trace. Step attempts are children of the segment that ran them; a step whose outcome
is already in the log is replayed, not run, and gets no span. The step span is the
current span while the step body runs, so spans the step's own code makes (an HTTP
client's, a database driver's) are its children. A child workflow's run continues
its parent's segment; a run started by `continue_as_new` continues the stored
context of the run it replaces.

Steps over HTTP. `HttpStepRunner` sends the attempt's context (its step span) as
``traceparent``/``tracestate`` headers with each `/step` request; the server that runs
the attempt makes its own ``step NAME`` span (kind SERVER, ``worldflow.remote``) under
that context, current while the step body runs there, so the body's spans join the
run's trace. A request without those headers runs under no span.
"""

from __future__ import annotations

import contextvars
import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.trace import Span, Tracer

    from worldflow.core.events import ErrorInfo
    from worldflow.core.steps import StepOutcome

__all__ = [
    "StepSpan",
    "active",
    "carrier_from_headers",
    "carrier_of",
    "current_carrier",
    "end_run_span",
    "end_step_span",
    "load",
    "record_exception",
    "start_remote_step_span",
    "start_run_span",
    "start_step_span",
    "step_span_current",
]

logger = logging.getLogger("worldflow.telemetry")

#: OpenTelemetry is importable and not disabled: the only thing hot paths look at
active = False
_loaded = False
_tracer: Tracer | None = None
#: the opentelemetry.trace and opentelemetry.baggage modules, once loaded (the checks
#: made on every start and run do not go through the import system)
_trace_api: Any = None
_baggage_api: Any = None

#: values of WORKFLOW_OTEL that turn telemetry off
_OFF = frozenset({"0", "false", "no", "off"})


def load() -> bool:
    """Import OpenTelemetry once (later calls only return the answer); True if spans
    are made. Called when an engine starts and by `start()`."""
    global active, _loaded, _tracer, _trace_api, _baggage_api
    if _loaded:
        return active
    _loaded = True
    if os.environ.get("WORKFLOW_OTEL", "").strip().lower() in _OFF:
        return False
    try:
        from opentelemetry import trace
    except ImportError:
        return False
    except Exception:  # a broken install must not stop workflows
        logger.warning("OpenTelemetry could not be imported; no spans are made",
                       exc_info=True)
        return False
    from importlib.metadata import PackageNotFoundError, version

    try:
        release: str | None = version("worldflow")
    except PackageNotFoundError:  # run from a source tree
        release = None
    from opentelemetry import baggage

    _tracer = trace.get_tracer("worldflow", release)
    _trace_api, _baggage_api = trace, baggage
    active = True
    return True


def _sdk_configured() -> bool:
    """A tracer provider is set (an SDK, or another implementation); with the API's
    default provider every span would be a no-op, so none is started."""
    trace = _trace_api
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def current_carrier() -> dict[str, str]:
    """The caller's trace context as W3C headers (empty when there is no span)."""
    if not active:
        return {}
    if (not _trace_api.get_current_span().get_span_context().is_valid
            and not _baggage_api.get_all()):
        return {}  # nothing to carry (the usual case without an SDK)
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def carrier_of(span: Span | None) -> dict[str, str]:
    """The trace context of `span` (a child run's parent), as W3C headers."""
    if not active or span is None:
        return {}
    from opentelemetry import propagate, trace

    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def carrier_from_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The trace context that request `headers` carry (the propagator's fields, e.g.
    ``traceparent``, ``tracestate``; `headers` looks names up case-insensitively, as
    Starlette's do); empty when telemetry is off or they carry none."""
    if not active:
        return {}
    from opentelemetry import propagate

    return {field: value for field in propagate.get_global_textmap().fields
            if (value := headers.get(field))}


def start_run_span(carrier: dict[str, str], run_id: str, workflow: str, *,
                   replayed_events: int) -> Span | None:
    """A segment of a run: a ``workflow NAME`` span continuing the stored context; None
    if it is not recorded (no SDK is configured, or it is sampled out), and then its
    steps make no spans either: with the API alone, a step costs one `is None` check."""
    if _tracer is None or not _sdk_configured():
        return None
    from opentelemetry import context, propagate

    # the stored context, never the task's current one (an actor task inherits the
    # context of whoever happened to create it)
    parent = propagate.extract(carrier, context=context.Context()) if carrier else (
        context.Context())
    span = _tracer.start_span(f"workflow {workflow}", context=parent, attributes={
        "worldflow.run_id": run_id, "worldflow.workflow": workflow,
        "worldflow.replayed_events": replayed_events})
    return span if span.is_recording() else None


def end_run_span(span: Span, outcome: str, error: BaseException | ErrorInfo | None = None
                 ) -> None:
    """End a segment; `outcome` is completed, failed, cancelled, continued, waiting
    (given back until a timer or input wakes it) or stopped (lease lost, shut down)."""
    span.set_attribute("worldflow.outcome", outcome)
    if error is not None:
        _record_error(span, error)
    span.end()


class StepSpan:
    """A step attempt's span, and whether its exception was recorded already."""

    __slots__ = ("exception_recorded", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.exception_recorded = False


_current_step: contextvars.ContextVar[StepSpan | None] = contextvars.ContextVar(
    "worldflow_step_span", default=None)


def start_step_span(run_span: Span | None, run_id: str, workflow: str, step: str,
                    step_id: str, attempt: int) -> StepSpan | None:
    """A ``step NAME`` span for one attempt, child of the run's segment."""
    if _tracer is None or run_span is None:
        return None
    from opentelemetry import trace

    span = _tracer.start_span(f"step {step}", context=trace.set_span_in_context(run_span),
                              attributes={"worldflow.run_id": run_id,
                                          "worldflow.workflow": workflow,
                                          "worldflow.step": step,
                                          "worldflow.step_id": step_id,
                                          "worldflow.attempt": attempt})
    return StepSpan(span)


def start_remote_step_span(carrier: dict[str, str], run_id: str, workflow: str,
                           step: str, step_id: str, attempt: int) -> StepSpan | None:
    """A ``step NAME`` span for an attempt run here on behalf of another process (a
    `/step` request), child of the sender's step span in `carrier`; None without a
    tracer or a carrier (the sender has no trace to join)."""
    if _tracer is None or not carrier:
        return None
    from opentelemetry import context, propagate, trace

    parent = propagate.extract(carrier, context=context.Context())
    span = _tracer.start_span(f"step {step}", context=parent, kind=trace.SpanKind.SERVER,
                              attributes={"worldflow.run_id": run_id,
                                          "worldflow.workflow": workflow,
                                          "worldflow.step": step,
                                          "worldflow.step_id": step_id,
                                          "worldflow.attempt": attempt,
                                          "worldflow.remote": True})
    return StepSpan(span)


class _Current:
    """Makes a step span the current span (and the one `record_exception` uses) while
    the attempt runs, in the task that runs it."""

    __slots__ = ("_step", "_token", "_use")

    def __init__(self, step: StepSpan) -> None:
        self._step = step

    def __enter__(self) -> None:
        from opentelemetry import trace

        self._token = _current_step.set(self._step)
        self._use: Any = trace.use_span(self._step.span, end_on_exit=False,
                                        record_exception=False,
                                        set_status_on_exception=False)
        self._use.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._use.__exit__(None, None, None)
        _current_step.reset(self._token)


def step_span_current(step: StepSpan) -> _Current:
    """``with step_span_current(s):`` the step body runs with `s` as its current span."""
    return _Current(step)


def record_exception(exc: BaseException) -> None:
    """Record the exception a step attempt raised on its span (if it has one)."""
    step = _current_step.get()
    if step is not None and not step.exception_recorded:
        step.span.record_exception(exc)
        step.exception_recorded = True


def end_step_span(step: StepSpan, outcome: StepOutcome | None) -> None:
    """End an attempt's span with its outcome (None: the attempt was cancelled)."""
    from opentelemetry.trace import StatusCode

    from worldflow.core.events import StepCompleted, StepFailed

    span = step.span
    if outcome is None:
        span.set_attribute("worldflow.outcome", "cancelled")
    elif isinstance(outcome, StepCompleted):
        span.set_attribute("worldflow.outcome", "completed")
        span.set_status(StatusCode.OK)
    else:
        span.set_attribute("worldflow.outcome",
                           "failed" if isinstance(outcome, StepFailed) else "retrying")
        if not step.exception_recorded:  # e.g. a step run over HTTP: only its record
            _record_error(span, outcome.error)
        else:
            span.set_status(StatusCode.ERROR, f"{outcome.error.type}: "
                                              f"{outcome.error.message}")
    span.end()


def _record_error(span: Span, error: BaseException | ErrorInfo) -> None:
    from opentelemetry.trace import StatusCode

    if isinstance(error, BaseException):
        span.record_exception(error)
        span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
        return
    # an error known only as stored: the same event record_exception would add
    attributes = {"exception.type": error.type, "exception.message": error.message}
    if error.traceback:
        attributes["exception.stacktrace"] = error.traceback
    span.add_event("exception", attributes)
    span.set_status(StatusCode.ERROR, f"{error.type}: {error.message}")

