"""`worldflow inspect ...` as a subprocess against a SQLite file of real runs."""

from __future__ import annotations

import json

import pytest

from tests.cli.flows import (
    FAILED_RUN,
    FAILURE_MESSAGE,
    HOOK_RUN,
    HOOK_TOKEN,
    OK_RUN,
    SECOND_HOOK_TOKEN,
    TITLE,
    XSS,
)
from tests.cli.helpers import run_cli

RUN_SUMMARY_KEYS = {"run_id", "workflow_name", "status", "queue", "created_at", "started_at",
                    "completed_at", "updated_at", "duration_ms", "step_counts", "error",
                    "corrupt", "waiting", "tags"}
STEP_KEYS = {"step_id", "correlation_id", "step_name", "status", "attempts", "input", "output",
             "error", "started_at", "completed_at", "duration_ms", "retries"}


def test_runs_table_shows_status_duration_and_steps_done_of_total(populated_db: str) -> None:
    result = run_cli(populated_db, "inspect", "runs")
    assert result.code == 0, result.err
    lines = {line.split("│")[1].strip(): line for line in result.out.splitlines()
             if line.startswith("│")}
    assert set(lines) == {OK_RUN, FAILED_RUN, HOOK_RUN}
    assert "completed" in lines[OK_RUN] and "2/2" in lines[OK_RUN]
    assert "failed" in lines[FAILED_RUN] and "1/2 (1 failed)" in lines[FAILED_RUN]
    assert "running" in lines[HOOK_RUN] and "0/0" in lines[HOOK_RUN]
    assert "ms" in lines[OK_RUN]  # the duration
    assert "next cursor" not in result.out


def test_runs_json_is_one_document_newest_first(populated_db: str) -> None:
    result = run_cli(populated_db, "inspect", "runs", "--json")
    assert result.code == 0, result.err
    document = result.json()
    assert set(document) == {"runs", "next_cursor"}
    assert document["next_cursor"] is None
    runs = document["runs"]
    assert [run["run_id"] for run in runs] == [HOOK_RUN, FAILED_RUN, OK_RUN]
    for run in runs:
        assert set(run) == RUN_SUMMARY_KEYS
    by_id = {run["run_id"]: run for run in runs}
    assert by_id[OK_RUN]["status"] == "completed"
    assert by_id[OK_RUN]["duration_ms"] > 0
    assert by_id[OK_RUN]["step_counts"] == {"total": 2, "completed": 2, "failed": 0,
                                            "running": 0, "pending": 0}
    failed = by_id[FAILED_RUN]
    assert failed["error"]["type"] == "StepFailedError"
    assert "traceback" not in failed["error"]
    assert by_id[HOOK_RUN]["completed_at"] is None and by_id[HOOK_RUN]["duration_ms"] is None


def test_run_detail_json_has_input_output_steps_and_retry_history(populated_db: str) -> None:
    ok = run_cli(populated_db, "inspect", "runs", OK_RUN, "--json").json()
    assert ok["input"] == {"args": [TITLE], "kwargs": {}}
    assert ok["output"] == {"title": TITLE, "items": 5, "note": XSS}
    assert [step["step_name"] for step in ok["steps"]] == ["cli_fetch", "cli_fetch"]

    detail = run_cli(populated_db, "inspect", "runs", FAILED_RUN, "--json").json()
    assert set(detail) == RUN_SUMMARY_KEYS | {"input", "output", "steps", "parent_run_id",
                                              "children"}
    assert detail["status"] == "failed"
    assert detail["error"]["type"] == "StepFailedError"
    assert "ValueError" in detail["error"]["traceback"]
    fetch, reserve = detail["steps"]
    assert set(reserve) == STEP_KEYS
    assert fetch["status"] == "completed" and fetch["retries"] == []
    assert reserve["status"] == "failed"
    assert reserve["attempts"] == 3
    assert reserve["error"]["type"] == "ValueError"
    assert reserve["error"]["message"] == FAILURE_MESSAGE
    assert "raise ValueError" in reserve["error"]["traceback"]
    assert [retry["attempt"] for retry in reserve["retries"]] == [1, 2]
    first, second = reserve["retries"]
    # backoff ("10ms", 2, "50ms"), counted from when the failure was recorded
    assert 0 < first["delay_ms"] <= 10.001
    assert 0 < second["delay_ms"] <= 20.001
    assert first["next_started_at"] is not None and second["next_started_at"] is not None
    assert first["error"]["message"] == FAILURE_MESSAGE


def test_run_detail_text_shows_error_traceback_and_attempts(populated_db: str) -> None:
    result = run_cli(populated_db, "inspect", "runs", FAILED_RUN)
    assert result.code == 0, result.err
    assert "StepFailedError: step 'cli_reserve' failed after 3 attempt(s)" in result.out
    assert "Traceback (most recent call last)" in result.out  # the run's, not ours
    assert "attempt 1 failed (ValueError: " in result.out
    assert "attempt 2 failed" in result.out and "retried after" in result.out
    reserve_row = next(line for line in result.out.splitlines() if "cli_reserve" in line
                       and "│" in line)
    assert "failed" in reserve_row and " 3 " in reserve_row
    assert result.err == ""


def test_filters_by_status_and_workflow(populated_db: str) -> None:
    failed = run_cli(populated_db, "inspect", "runs", "--status", "failed", "--json").json()
    assert [run["run_id"] for run in failed["runs"]] == [FAILED_RUN]
    report = run_cli(populated_db, "inspect", "runs", "--workflow", "cli_report", "--json")
    assert [run["run_id"] for run in report.json()["runs"]] == [OK_RUN]
    nothing = run_cli(populated_db, "inspect", "runs", "--workflow", "nope")
    assert nothing.code == 0 and "no runs" in nothing.out


def test_pagination_walks_120_runs_in_3_pages_without_duplicates(many_runs_db: str) -> None:
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        args = ["inspect", "runs", "--limit", "50", "--json"]
        if cursor is not None:
            args += ["--cursor", cursor]
        page = run_cli(many_runs_db, *args).json()
        sizes.append(len(page["runs"]))
        seen += [run["run_id"] for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(sizes) < 5, "pagination does not end"
    assert sizes == [50, 50, 20]
    assert len(set(seen)) == 120
    assert seen == sorted(seen, reverse=True)  # newest first, created in id order


def test_text_listing_prints_the_next_cursor(many_runs_db: str) -> None:
    first = run_cli(many_runs_db, "inspect", "runs", "--limit", "50")
    cursor_line = [line for line in first.out.splitlines() if line.startswith("next cursor: ")]
    assert len(cursor_line) == 1
    cursor = cursor_line[0].removeprefix("next cursor: ")
    second = run_cli(many_runs_db, "inspect", "runs", "--limit", "50", "--cursor", cursor,
                     "--json").json()
    assert second["runs"][0]["run_id"] == "cli-many-0069"


def test_steps_events_hooks_json_shapes(populated_db: str) -> None:
    steps = run_cli(populated_db, "inspect", "steps", FAILED_RUN, "--json").json()
    assert steps["run_id"] == FAILED_RUN
    assert [set(step) for step in steps["steps"]] == [STEP_KEYS, STEP_KEYS]
    assert steps["steps"][1]["attempts"] == 3

    events = run_cli(populated_db, "inspect", "events", FAILED_RUN, "--json").json()
    types = [event["type"] for event in events["events"]]
    assert types == ["run_created", "run_started", "step_started", "step_completed",
                     "step_started", "step_retrying", "step_started", "step_retrying",
                     "step_started", "step_failed", "run_failed"]
    assert [event["seq"] for event in events["events"]] == list(range(11))
    retrying = events["events"][5]
    assert set(retrying) == {"seq", "type", "correlation_id", "created_at", "data"}
    assert retrying["correlation_id"] == "2"
    assert retrying["data"]["step_name"] == "cli_reserve"
    assert retrying["data"]["attempt"] == 1
    assert retrying["data"]["error"]["type"] == "ValueError"

    hooks = run_cli(populated_db, "inspect", "hooks", "--json").json()
    assert {hook["token"]: hook["status"] for hook in hooks["hooks"]} == {
        HOOK_TOKEN: "active", SECOND_HOOK_TOKEN: "active"}
    assert set(hooks["hooks"][0]) == {"token", "run_id", "correlation_id", "status",
                                      "created_at", "disposed_at", "received", "rejected"}
    only = run_cli(populated_db, "inspect", "hooks", "--run", OK_RUN, "--json").json()
    assert only == {"hooks": []}
    text = run_cli(populated_db, "inspect", "events", HOOK_RUN)
    assert "hook_received" in text.out and '"approved": true' in text.out


def test_streams_list_chunks_and_follow_a_closed_stream(populated_db: str) -> None:
    listing = run_cli(populated_db, "inspect", "streams", OK_RUN, "--json").json()
    assert listing == {"run_id": OK_RUN,
                       "streams": [{"name": "default", "chunks": 4, "closed": True}]}
    chunks = run_cli(populated_db, "inspect", "streams", OK_RUN, "default", "--json").json()
    assert chunks["closed"] is True
    assert [chunk["index"] for chunk in chunks["chunks"]] == [0, 1, 2, 3]
    assert {chunk["encoding"] for chunk in chunks["chunks"]} == {"json", "base64"}
    assert {"fetched": 2} in [chunk["data"] for chunk in chunks["chunks"]]
    text = run_cli(populated_db, "inspect", "streams", OK_RUN, "default")
    assert "raw bytes" in text.out and '{"fetched":3}' in text.out
    follow = run_cli(populated_db, "inspect", "streams", OK_RUN, "default", "--follow",
                     "--json", timeout=20)
    assert follow.code == 0
    lines = [json.loads(line) for line in follow.out.splitlines()]
    assert [chunk["index"] for chunk in lines] == [0, 1, 2, 3]
    missing = run_cli(populated_db, "inspect", "streams", OK_RUN, "nope")
    assert missing.code == 1
    assert missing.err.strip() == f"worldflow: stream not found: nope (run {OK_RUN})"


def test_json_output_keeps_markup_as_data(populated_db: str) -> None:
    result = run_cli(populated_db, "inspect", "runs", OK_RUN)
    assert XSS in result.out
    assert TITLE in result.out  # rich must not read "[bold red]" as markup
    hooks = run_cli(populated_db, "inspect", "events", HOOK_RUN, "--json").json()
    payloads = [e["data"]["payload"] for e in hooks["events"] if e["type"] == "hook_received"]
    assert payloads == [{"approved": True, "by": "<i>ann</i>"}]


@pytest.mark.parametrize("args", [
    ["inspect", "runs", "nope"],
    ["inspect", "steps", "nope"],
    ["inspect", "events", "nope"],
    ["inspect", "streams", "nope"],
    ["inspect", "hooks", "--run", "nope"],
    ["runs", "cancel", "nope"],
    ["runs", "retry", "nope"],
])
def test_unknown_run_exits_1_with_one_line(populated_db: str, args: list[str]) -> None:
    result = run_cli(populated_db, *args)
    assert result.code == 1
    assert result.err == "worldflow: run not found: nope\n"
    assert result.out == ""


def test_debug_adds_the_traceback(populated_db: str) -> None:
    result = run_cli(populated_db, "--debug", "inspect", "runs", "nope")
    assert result.code == 1
    assert "Traceback (most recent call last)" in result.err
    assert result.err.splitlines()[-1] == "worldflow: run not found: nope"


def test_the_same_commands_on_postgres(populated_postgres: str) -> None:
    listing = run_cli(None, "--url", populated_postgres, "inspect", "runs", "--json")
    assert listing.code == 0, listing.err
    assert [run["run_id"] for run in listing.json()["runs"]] == [HOOK_RUN, FAILED_RUN, OK_RUN]
    detail = run_cli(None, "inspect", "runs", FAILED_RUN, "--json",
                     WORKFLOW_TARGET_WORLD="postgres", WORKFLOW_POSTGRES_URL=populated_postgres)
    assert detail.json()["steps"][1]["attempts"] == 3
    hooks = run_cli(None, "--url", populated_postgres, "inspect", "hooks", "--json").json()
    assert len(hooks["hooks"]) == 2
    missing = run_cli(None, "--url", populated_postgres, "inspect", "events", "nope")
    assert (missing.code, missing.err) == (1, "worldflow: run not found: nope\n")
