"""A worker process of the telemetry tests: python spans_app.py RUN_ID SPANS_FILE.

It installs the OpenTelemetry SDK with an exporter that appends each finished span to
SPANS_FILE as one JSON line (at once, so a SIGKILL loses only unfinished spans), opens
the world of the environment (which resumes every unfinished run), waits for RUN_ID's
result and prints ``DONE {json}``. With HANG_FIRST_ATTEMPT set, the first attempt of
`second` hangs (a worker to kill mid-run).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from worldflow import create_world, get_run, get_step_metadata, step, workflow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.trace import ReadableSpan


@step(name="otel_app_first")
async def first(x: int) -> int:
    return x + 1


@step(name="otel_app_second")
async def second(x: int) -> int:
    if os.environ.get("HANG_FIRST_ATTEMPT") and get_step_metadata().attempt == 1:
        await asyncio.sleep(60)
    return x * 2


@workflow(name="otel_app_flow")
async def flow(x: int) -> int:
    return await second(await first(x))


def span_json(span: ReadableSpan) -> dict[str, Any]:
    return {"name": span.name, "trace_id": format(span.context.trace_id, "032x"),
            "span_id": format(span.context.span_id, "016x"),
            "parent_id": None if span.parent is None else format(span.parent.span_id, "016x"),
            "attributes": dict(span.attributes or {}),
            "status": span.status.status_code.name, "pid": os.getpid()}


class FileExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as out:
            for span in spans:
                out.write(json.dumps(span_json(span)) + "\n")
        return SpanExportResult.SUCCESS


async def main(run_id: str) -> None:
    async with create_world() as world:
        result = await (await get_run(run_id, world=world)).result(timeout=60)
    print("DONE " + json.dumps(result), flush=True)


if __name__ == "__main__":
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(sys.argv[2])))
    trace.set_tracer_provider(provider)
    asyncio.run(main(sys.argv[1]))
    provider.shutdown()
