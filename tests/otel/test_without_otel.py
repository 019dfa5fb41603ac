"""worldflow without OpenTelemetry: nothing imported, nothing stored, same results.
Each case is a fresh interpreter (what is imported is per process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FLOW = """
import asyncio, sqlite3, sys
from worldflow import create_world, start, step, workflow
from worldflow.core import telemetry

@step
async def double(x: int) -> int:
    return x * 2

@workflow
async def flow(x: int) -> int:
    return await double(x) + 1

async def main() -> None:
    async with create_world("sqlite", path=sys.argv[1]) as world:
        run = await start(flow, 20, world=world, run_id="plain")
        print("RESULT", await run.result())

SETUP
asyncio.run(main())
payload = sqlite3.connect(sys.argv[1]).execute(
    "SELECT payload FROM workflow_events WHERE event_type = 'run_created'").fetchone()[0]
print("ACTIVE", telemetry.active)
print("STORED", "trace_context" in payload)
print("IMPORTED", sorted({m.split('.')[0] for m in sys.modules if m.startswith('opentelemetry')
                         and sys.modules[m] is not None}))
"""


def run_script(tmp_path: Path, setup: str, prelude: str = "",
               env: dict[str, str] | None = None) -> dict[str, str]:
    script = tmp_path / "flow.py"
    script.write_text(prelude + FLOW.replace("SETUP", setup))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_")}
    environ.update({"PYTHONPATH": str(ROOT), **(env or {})})
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "wf.db")],
                          env=environ, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return dict(line.split(" ", 1) for line in done.stdout.splitlines())


def test_worldflow_runs_without_opentelemetry_and_never_imports_it(tmp_path: Path) -> None:
    # as if the extra were not installed: `import opentelemetry` raises ImportError
    out = run_script(tmp_path, "", prelude="import sys\nsys.modules['opentelemetry'] = None\n")
    assert out == {"RESULT": "41", "ACTIVE": "False", "STORED": "False", "IMPORTED": "[]"}


def test_with_the_api_alone_runs_work_and_store_no_context(tmp_path: Path) -> None:
    # installed, but no SDK provider configured: the no-op default
    out = run_script(tmp_path, "")
    assert out == {"RESULT": "41", "ACTIVE": "True", "STORED": "False",
                   "IMPORTED": "['opentelemetry']"}


CALLER_SPAN = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
_main = main
async def main() -> None:
    with trace.get_tracer("app").start_as_current_span("caller"):
        await _main()
"""


def test_workflow_otel_0_turns_spans_off(tmp_path: Path) -> None:
    out = run_script(tmp_path, CALLER_SPAN + "import atexit\natexit.register(lambda: print("
                     "'SPANS', sorted(s.name for s in exporter.get_finished_spans())))\n",
                     env={"WORKFLOW_OTEL": "0"})
    assert out == {"RESULT": "41", "ACTIVE": "False", "STORED": "False",
                   "IMPORTED": "['opentelemetry']", "SPANS": "['caller']"}


def test_with_opentelemetry_the_caller_context_is_stored(tmp_path: Path) -> None:
    out = run_script(tmp_path, CALLER_SPAN + "import atexit\natexit.register(lambda: print("
                     "'SPANS', sorted(s.name for s in exporter.get_finished_spans())))\n")
    assert out == {"RESULT": "41", "ACTIVE": "True", "STORED": "True",
                   "IMPORTED": "['opentelemetry']",
                   "SPANS": "['caller', 'step double', 'workflow flow']"}


def test_import_worldflow_does_not_import_opentelemetry(tmp_path: Path) -> None:
    code = ("import sys, worldflow, worldflow.testing, worldflow.transports.http\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
