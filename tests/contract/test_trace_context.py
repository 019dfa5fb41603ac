"""The trace context `start()` stores with a run (telemetry): kept in its `run_created`
event by every world, absent from logs written before it existed."""

from __future__ import annotations

from typing import Any

from msgspec import Raw

from worldflow.core.events import RunCreated, decode_event, encode_event
from worldflow.core.records import NewRun

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_run_created_event_keeps_the_trace_context(storage: Any) -> None:
    carrier = {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}
    await storage.create_run(
        NewRun("tc-traced", "tc_flow", Raw(b'{"args":[],"kwargs":{}}'), storage.now(),
               trace_context=carrier), lease_owner=None, lease_seconds=30)
    await storage.create_run(
        NewRun("tc-plain", "tc_flow", Raw(b'{"args":[],"kwargs":{}}'), storage.now()),
        lease_owner=None, lease_seconds=30)

    [traced] = await storage.list_events("tc-traced")
    [plain] = await storage.list_events("tc-plain")
    assert isinstance(traced.event, RunCreated) and isinstance(plain.event, RunCreated)
    assert traced.event.trace_context == carrier
    assert plain.event.trace_context == {}


def test_run_created_without_a_trace_context_is_stored_as_before() -> None:
    old = b'{"type":"run_created","workflow_name":"w","input":{"args":[],"kwargs":{}}}'
    event = decode_event(old)
    assert isinstance(event, RunCreated) and event.trace_context == {}
    assert encode_event(event) == old  # an empty context adds nothing to the log
    traced = RunCreated("w", Raw(b"null"), trace_context={"traceparent": TRACEPARENT})
    assert decode_event(encode_event(traced)) == traced
