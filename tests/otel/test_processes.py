"""The caller's trace context crosses processes with the run: this test process starts
a run inside a span on a SQLite file (or a Postgres database) without running it, and
worker processes (`spans_app.py`, each with its own exporter) run it, also after a
SIGKILL mid-run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry import trace

from tests.otel.spans_app import flow
from tests.worker_process import finish
from worldflow import create_world, start

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).with_name("spans_app.py")
tracer = trace.get_tracer("tests.otel")


def worker_env(tmp_path: Path, backend: str, request: pytest.FixtureRequest
               ) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WORKFLOW_", "OTEL_"))}
    env.update({"PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING",
                "WORKFLOW_TARGET_WORLD": backend})
    if backend == "sqlite":
        env["WORKFLOW_SQLITE_PATH"] = str(tmp_path / "otel.db")
    else:
        env["WORKFLOW_POSTGRES_URL"] = request.getfixturevalue("postgres_url")
        env["WORKFLOW_POSTGRES_JOB_PREFIX"] = "o" + uuid.uuid4().hex[:10]
    return env


async def start_in_span(env: dict[str, str], run_id: str) -> Any:
    """Start `flow(1)` inside a span, in a world opened for storage only (this process
    runs nothing); returns the caller span's context. (The tests are sync: they wait
    for worker processes.)"""
    if env["WORKFLOW_TARGET_WORLD"] == "sqlite":
        world = create_world("sqlite", path=env["WORKFLOW_SQLITE_PATH"])
    else:
        world = create_world("postgres", connection_string=env["WORKFLOW_POSTGRES_URL"],
                             job_prefix=env["WORKFLOW_POSTGRES_JOB_PREFIX"])
    await world.open()
    try:
        with tracer.start_as_current_span("caller") as caller:
            await start(flow, 1, world=world, run_id=run_id)
    finally:
        await world.close()
    return caller.get_span_context()


def spawn(env: dict[str, str], run_id: str, spans_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(APP), run_id, str(spans_file)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_worker_process_continues_the_callers_trace(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest,
        spans: InMemorySpanExporter) -> None:
    env = worker_env(tmp_path, backend, request)
    caller = asyncio.run(start_in_span(env, "otel-cross"))
    spans_file = tmp_path / "spans.jsonl"

    assert finish(spawn(env, "otel-cross", spans_file), 60) == 4  # (1 + 1) * 2

    found = read_spans(spans_file)
    assert sorted(s["name"] for s in found) == [
        "step otel_app_first", "step otel_app_second", "workflow otel_app_flow"]
    assert {s["trace_id"] for s in found} == {format(caller.trace_id, "032x")}
    [run_span] = [s for s in found if s["name"].startswith("workflow ")]
    assert run_span["parent_id"] == format(caller.span_id, "016x")
    assert run_span["attributes"]["worldflow.outcome"] == "completed"
    assert {s["parent_id"] for s in found if s["name"].startswith("step ")} == {
        run_span["span_id"]}


def recorded(db: str) -> set[tuple[str, str]]:
    """(event type, correlation id) of the step events in the log."""
    conn = sqlite3.connect(db)
    try:
        return set(conn.execute(
            "SELECT event_type, correlation_id FROM workflow_events "
            "WHERE event_type IN ('step_started', 'step_completed')"))
    finally:
        conn.close()


def test_resumed_run_after_sigkill_gives_no_second_span_for_completed_steps(
        tmp_path: Path, request: pytest.FixtureRequest, spans: InMemorySpanExporter) -> None:
    env = worker_env(tmp_path, "sqlite", request)
    caller = asyncio.run(start_in_span(env, "otel-crash"))
    first_file, second_file = tmp_path / "first.jsonl", tmp_path / "second.jsonl"

    # the first worker completes `first`, then hangs in `second` (its start recorded)
    # and is killed there
    worker = spawn(env | {"HANG_FIRST_ATTEMPT": "1"}, "otel-crash", first_file)
    try:
        deadline = time.monotonic() + 30
        while not {("step_completed", "1"), ("step_started", "2")} <= recorded(
                env["WORKFLOW_SQLITE_PATH"]):
            assert worker.poll() is None, worker.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.02)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=10)
    assert worker.returncode == -signal.SIGKILL
    before = read_spans(first_file)
    assert [s["name"] for s in before] == ["step otel_app_first"]  # nothing else ended

    assert finish(spawn(env, "otel-crash", second_file), 60) == 4
    after = read_spans(second_file)
    assert sorted(s["name"] for s in after) == ["step otel_app_second",
                                                "workflow otel_app_flow"]
    [run_span] = [s for s in after if s["name"].startswith("workflow ")]
    [retried] = [s for s in after if s["name"] == "step otel_app_second"]
    # the killed attempt counts as failed: the new process runs attempt 2
    assert retried["attributes"]["worldflow.attempt"] == 2
    assert retried["parent_id"] == run_span["span_id"]
    assert run_span["parent_id"] == format(caller.span_id, "016x")
    assert run_span["attributes"]["worldflow.replayed_events"] > 1
    assert {s["trace_id"] for s in before + after} == {format(caller.trace_id, "032x")}
