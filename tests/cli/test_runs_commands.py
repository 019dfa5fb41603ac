"""Commands that change runs (`runs cancel`, `runs retry`) and following a live stream."""

from __future__ import annotations

import json
import subprocess
import sys

from msgspec import Raw

from tests.cli.flows import FAILED_RUN, HOOK_RUN, OK_RUN
from tests.cli.helpers import cli_env, run_async, run_cli
from worldflow import create_world
from worldflow.core.records import RunStatus


async def _finish_runs(path: str, run_id: str) -> RunStatus:
    """Start the world (a worker) until `run_id` has ended; return its status."""
    async with create_world("sqlite", path=path) as world:
        run = await world.wait_run_finished(run_id, timeout=20)
        return RunStatus(run.status)


def test_cancel_queues_a_cancel_that_a_worker_carries_out(scratch_db: str) -> None:
    result = run_cli(scratch_db, "runs", "cancel", HOOK_RUN, "--json")
    assert result.code == 0, result.err
    assert result.json() == {"run_id": HOOK_RUN, "cancel_requested": True, "status": "running"}
    # the CLI never runs workflows: the run ends when a worker of the world takes the cancel
    status = run_cli(scratch_db, "inspect", "runs", HOOK_RUN, "--json").json()["status"]
    assert status == "running"
    assert run_async(_finish_runs, scratch_db, HOOK_RUN) == RunStatus.CANCELLED
    again = run_cli(scratch_db, "runs", "cancel", HOOK_RUN)
    assert again.code == 0
    assert f"run {HOOK_RUN} has already ended (cancelled)" in again.out
    hooks = run_cli(scratch_db, "inspect", "hooks", "--run", HOOK_RUN, "--json").json()
    assert {hook["status"] for hook in hooks["hooks"]} == {"disposed"}


def test_retry_starts_the_failed_run_again_from_its_log(scratch_db: str) -> None:
    result = run_cli(scratch_db, "runs", "retry", FAILED_RUN, "--json")
    assert result.code == 0, result.err
    new_id = f"{FAILED_RUN}-retry1"
    assert result.json() == {"run_id": FAILED_RUN, "new_run_id": new_id}
    detail = run_cli(scratch_db, "inspect", "runs", new_id, "--json").json()
    assert detail["workflow_name"] == "cli_order"
    assert detail["status"] in ("pending", "running")  # the copied log has run_started
    assert detail["completed_at"] is None
    assert [step["status"] for step in detail["steps"]] == ["completed"]  # replayed, not redone
    # a worker replays the completed step and runs the failing one again (it fails again)
    assert run_async(_finish_runs, scratch_db, new_id) == RunStatus.FAILED
    steps = run_cli(scratch_db, "inspect", "steps", new_id, "--json").json()["steps"]
    assert [(s["step_name"], s["status"], s["attempts"]) for s in steps] == [
        ("cli_fetch", "completed", 1), ("cli_reserve", "failed", 3)]
    text = run_cli(scratch_db, "runs", "retry", FAILED_RUN)
    assert text.code == 0 and f"retried as {FAILED_RUN}-retry2" in text.out


def test_retry_of_a_completed_run_is_refused(scratch_db: str) -> None:
    result = run_cli(scratch_db, "runs", "retry", OK_RUN)
    assert result.code == 1
    assert result.err == (f"worldflow: run {OK_RUN} is completed; only failed or cancelled "
                          f"runs can be retried\n")


async def _write(path: str, index: int, value: str, *, close: bool = False) -> None:
    world = create_world("sqlite", path=path)
    await world.open()
    try:
        chunk = Raw(json.dumps({"w": "test", "v": value}).encode())
        await world.write_stream(HOOK_RUN, "live", [(index, chunk)], close=close)
    finally:
        await world.close()


def test_follow_prints_chunks_as_another_process_writes_them(scratch_db: str) -> None:
    run_async(_write, scratch_db, 0, "first")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worldflow.cli.main", "inspect", "streams", HOOK_RUN, "live",
         "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env(scratch_db))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "0\tfirst\n"
        run_async(_write, scratch_db, 1, "second", close=True)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == "1\tsecond\n"


def test_send_puts_a_message_in_the_runs_inbox(scratch_db: str) -> None:
    result = run_cli(scratch_db, "runs", "send", HOOK_RUN, "--topic", "orders",
                     "--json", '{"id": 7}')
    assert result.code == 0, result.err
    assert result.json() == {"run_id": HOOK_RUN, "topic": "orders", "sent": True}

    async def inbox(path: str) -> list[tuple[str, str | None, bytes]]:
        world = create_world("sqlite", path=path)
        await world.open()
        try:
            return [(m.kind, m.token, bytes(m.payload or b""))
                    for m in await world.read_inbox(HOOK_RUN)]
        finally:
            await world.close()

    assert run_async(inbox, scratch_db) == [("message", "orders", b'{"id":7}')]
    missing = run_cli(scratch_db, "runs", "send", "nope", "--json", "1")
    assert missing.code == 1 and "run not found" in missing.err
    bad = run_cli(scratch_db, "runs", "send", HOOK_RUN, "--json", "{nope")
    assert bad.code == 2 and "not valid JSON" in bad.err
