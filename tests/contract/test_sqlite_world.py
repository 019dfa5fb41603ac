"""What only the SQLite world promises: group commit, one file that debugging queries can
read, survival across restarts, and refusing files that are not worldflow databases."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import re
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import pytest
from msgspec import Raw

from worldflow.core.events import (
    ErrorInfo,
    EventRecord,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepRetrying,
    StepStarted,
)
from worldflow.core.records import NewRun, RunStatus
from worldflow.errors import LeaseLostError, SchemaError, WorldError
from worldflow.worlds.batching import GroupCommitQueue
from worldflow.worlds.sqlite import SQLiteWorld
from worldflow.worlds.sqlite.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[SQLiteWorld]:
    w = SQLiteWorld(str(tmp_path / "wf.db"))
    await w.open()
    try:
        yield w
    finally:
        await w.close()


async def create(world: SQLiteWorld, run_id: str, workflow_name: str = "wf") -> None:
    await world.create_run(NewRun(run_id, workflow_name, Raw(b"{}"), world.now()),
                           lease_owner=None, lease_seconds=30.0)


def started(world: SQLiteWorld, run_id: str, seq: int = 1) -> list[EventRecord]:
    return [EventRecord(run_id, seq, RunStarted(), world.now())]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_500_concurrent_appends_all_commit_in_few_transactions(
        world: SQLiteWorld) -> None:
    run_ids = [f"run-{i}" for i in range(500)]
    await asyncio.gather(*(create(world, run_id) for run_id in run_ids))
    before = world.commits
    await asyncio.gather(*(world.append_events(run_id, started(world, run_id))
                           for run_id in run_ids))
    assert world.commits - before < 50  # group commit: far fewer transactions than appends
    runs = await asyncio.gather(*(world.get_run(run_id) for run_id in run_ids))
    assert {run.status for run in runs if run is not None} == {RunStatus.RUNNING}
    assert None not in runs


async def test_one_callers_error_in_a_batch_leaves_the_others_committed(
        world: SQLiteWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    # the three writes must make one batch: none is committed alone (the first of a
    # burst would be, at low load: batching's "Alone")
    monkeypatch.setattr(GroupCommitQueue, "_alone", lambda self: False)
    for run_id in ("a", "b", "c"):
        await create(world, run_id)
    await world.append_events("b", started(world, "b"))
    before = world.commits
    results = await asyncio.gather(
        world.append_events("a", started(world, "a")),
        world.append_events("b", started(world, "b")),  # seq 1 is taken: fenced off
        world.append_events("c", started(world, "c")),
        return_exceptions=True)
    assert world.commits - before == 1  # all three shared one transaction
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], LeaseLostError)
    assert [len(await world.list_events(r)) for r in ("a", "b", "c")] == [2, 2, 2]


async def test_a_steps_start_and_completion_in_one_batch_are_one_append(
        world: SQLiteWorld) -> None:
    """A step's start (not awaited) and its completion, queued apart with other runs'
    writes between them, commit in one transaction as one append of the run: the step
    row is inserted completed with both times, and the run's counters are right."""
    for run_id in ("r", "other"):
        await create(world, run_id)
    await world.append_events("r", started(world, "r"))
    with contextlib.closing(sqlite3.connect(world.path)) as db, db:  # counts step updates
        db.executescript("CREATE TABLE step_updates (id TEXT); "
                         "CREATE TRIGGER step_updated AFTER UPDATE ON workflow_steps "
                         "BEGIN INSERT INTO step_updates VALUES (NEW.id); END;")
    t0 = world.now()
    t1 = t0.replace(microsecond=(t0.microsecond + 1) % 1_000_000)
    before = world.commits
    await world.append_events("r", [
        EventRecord("r", 2, StepStarted("a", "s", 1, Raw(b"[1]")), t0),
        EventRecord("r", 3, StepStarted("b", "s", 1, Raw(b"[2]")), t0)], wait=False)
    await asyncio.gather(
        world.append_events("other", started(world, "other")),
        world.append_events("r", [
            EventRecord("r", 4, StepCompleted("a", "s", 1, Raw(b"10")), t1)]))
    assert world.commits - before == 1
    assert [e.seq for e in await world.list_events("r")] == [0, 1, 2, 3, 4]
    steps = {s.correlation_id: s for s in await world.list_steps("r")}
    assert (steps["a"].status, steps["a"].attempt, bytes(steps["a"].output or b"")) == (
        "completed", 1, b"10")
    assert (steps["a"].started_at, steps["a"].completed_at) == (t0, t1)
    assert (steps["b"].status, steps["b"].completed_at) == ("running", None)
    run = await world.get_run("r")
    assert run is not None
    assert (run.steps_total, run.steps_completed, run.steps_running) == (2, 1, 1)
    with contextlib.closing(sqlite3.connect(world.path)) as db:  # inserted completed, no update
        assert db.execute("SELECT count(*) FROM step_updates").fetchone() == (0,)


async def test_a_later_attempt_in_one_append_updates_the_steps_row(
        world: SQLiteWorld) -> None:
    """A retried step's start and completion in one append: its row (from the first
    attempt) becomes completed at attempt 2, counted once."""
    await create(world, "r")
    now = world.now()
    await world.append_events("r", [
        *started(world, "r"), EventRecord("r", 2, StepStarted("a", "s", 1, Raw(b"[]")), now),
        EventRecord("r", 3, StepRetrying("a", "s", 1, ErrorInfo("E", "boom"), now), now)])
    await world.append_events("r", [
        EventRecord("r", 4, StepStarted("a", "s", 2, Raw(b"[]")), now),
        EventRecord("r", 5, StepCompleted("a", "s", 2, Raw(b"7")), now)])
    [step] = await world.list_steps("r")
    assert (step.status, step.attempt, bytes(step.output or b""), step.error) == (
        "completed", 2, b"7", None)
    run = await world.get_run("r")
    assert run is not None
    assert (run.steps_total, run.steps_completed, run.steps_running) == (1, 1, 0)


async def test_a_lost_unawaited_append_fails_the_runs_next_append(world: SQLiteWorld) -> None:
    await create(world, "r")
    await world.append_events("r", started(world, "r"))
    await world.append_events("r", started(world, "r"), wait=False)  # seq 1 again
    with pytest.raises(LeaseLostError, match="earlier append"):
        await world.append_events("r", [EventRecord("r", 2, StepStarted("c", "s", 1),
                                                    world.now())])
    assert [e.seq for e in await world.list_events("r")] == [0, 1]


async def test_queued_writes_are_committed_by_close(tmp_path: Path) -> None:
    path = str(tmp_path / "wf.db")
    world = SQLiteWorld(path)
    await world.open()
    await create(world, "r")
    await world.append_events("r", started(world, "r"), wait=False)
    await world.close()
    with pytest.raises(WorldError, match="not open"):
        await world.get_run("r")
    reopened = SQLiteWorld(path)
    await reopened.open()
    try:
        run = await reopened.get_run("r")
        assert run is not None and run.status == RunStatus.RUNNING
    finally:
        await reopened.close()


async def test_a_close_as_the_watcher_connects_leaves_no_connection_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The world closes while its run-end watcher is opening its connection (someone
    began waiting for a run just before): that connection is closed once open, not left
    to the collector with its thread (Python 3.13 warns of each such connection)."""
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def recording_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", recording_connect)
    world = SQLiteWorld(str(tmp_path / "wf.db"))
    await world.open()
    at_open = len(opened)
    assert world._watcher is not None
    world._watcher.wake()
    await asyncio.sleep(0)  # the watcher's task starts opening its connection
    await world.close()
    await asyncio.sleep(0.2)  # (a connection left behind would have opened by now)
    assert len(opened) > at_open  # the watcher did open one
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.total_changes  # noqa: B018 (raises on a closed connection)


async def test_an_open_cancelled_midway_leaves_no_connection_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """open() cancelled while it opens its writer's or a reader's connection (each in
    turn): every connection it opened, or was opening, ends closed."""
    opened: list[sqlite3.Connection] = []
    calls, nth = 0, 0
    loop = asyncio.get_running_loop()
    nth_called = asyncio.Event()
    connect = sqlite3.connect

    def slow_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        nonlocal calls
        calls += 1
        if calls == nth:
            loop.call_soon_threadsafe(nth_called.set)
        time.sleep(0.05)  # (in aiosqlite's thread) long enough to be cancelled meanwhile
        conn = connect(*args, **kwargs)
        opened.append(conn)
        return conn

    path = str(tmp_path / "wf.db")
    async with SQLiteWorld(path):  # the file and its schema exist
        pass
    monkeypatch.setattr(sqlite3, "connect", slow_connect)
    for nth in (1, 2, 3):  # the writer's connection, then each reader's
        calls, before = 0, len(opened)
        nth_called.clear()
        world = SQLiteWorld(path)
        opening = asyncio.ensure_future(world.open())
        await nth_called.wait()
        opening.cancel()  # while its nth connection opens
        with pytest.raises(asyncio.CancelledError):
            await opening
        await asyncio.sleep(0.2)  # (a connection left opening is open by now)
        assert len(opened) - before == nth
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.total_changes  # noqa: B018 (raises on a closed connection)


async def test_runs_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "nested" / "dir" / "wf.db")  # parent folders are created
    first = SQLiteWorld(path)
    await first.open()
    await create(first, "r")
    records = [*started(first, "r"),
               EventRecord("r", 2, StepStarted("c1", "s", 1, Raw(b"[1]")), first.now()),
               EventRecord("r", 3, StepCompleted("c1", "s", 1, Raw(b"2")), first.now())]
    await first.append_events("r", records)
    await first.close()
    second = SQLiteWorld(path)
    await second.open()
    try:
        assert (await second.list_events("r"))[1:] == records
        assert [s.status for s in await second.list_steps("r")] == ["completed"]
        assert await second.claim_runs("w", 10, 30.0) == ["r"]
    finally:
        await second.close()


async def test_two_worlds_on_one_file_never_hold_one_run(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    a, b = SQLiteWorld(path), SQLiteWorld(path)
    await a.open()
    await b.open()
    try:
        for i in range(40):
            await create(a, f"r{i}")
        claims = await asyncio.gather(*(w.claim_runs(f"{w_name}-{i}", 7, 30.0)
                                        for i in range(4)
                                        for w_name, w in (("a", a), ("b", b))))
        claimed = [run_id for claim in claims for run_id in claim]
        assert len(claimed) == len(set(claimed)) == 40
    finally:
        await a.close()
        await b.close()


async def test_seed_debug_queries_read_the_file(world: SQLiteWorld) -> None:
    await create(world, "ok-run", "data_processing")
    await create(world, "bad-run", "data_processing")
    await world.append_events("ok-run", [
        *started(world, "ok-run"),
        EventRecord("ok-run", 2, StepStarted("c1", "fetch_items", 1, Raw(b"[100]")),
                    world.now()),
        EventRecord("ok-run", 3, StepCompleted("c1", "fetch_items", 1, Raw(b"[1,2]")),
                    world.now()),
        EventRecord("ok-run", 4, RunCompleted(Raw(b'{"items":2}')), world.now())])
    await world.append_events("bad-run", [
        *started(world, "bad-run"),
        EventRecord("bad-run", 2, RunFailed(ErrorInfo("ValueError", "bad input")),
                    world.now())])
    conn = sqlite3.connect(world.path)
    conn.row_factory = sqlite3.Row
    try:
        recent = conn.execute(
            "SELECT * FROM workflow_runs ORDER BY started_at DESC LIMIT 10").fetchall()
        assert [r["id"] for r in recent] == ["bad-run", "ok-run"]
        assert recent[1]["output"] == '{"items":2}' and recent[1]["status"] == "completed"
        failed = conn.execute("SELECT * FROM workflow_runs WHERE status = 'failed'").fetchall()
        assert [r["id"] for r in failed] == ["bad-run"]
        assert '"message":"bad input"' in failed[0]["error"]
        steps = conn.execute("SELECT * FROM workflow_steps WHERE workflow_run_id = ?",
                             ("ok-run",)).fetchall()
        assert [(s["step_name"], s["status"], s["attempt"], s["output"]) for s in steps] == [
            ("fetch_items", "completed", 1, "[1,2]")]
        events = conn.execute("SELECT event_type, correlation_id, payload, created_at "
                              "FROM workflow_events WHERE workflow_run_id = ? ORDER BY seq",
                              ("ok-run",)).fetchall()
        assert [e["event_type"] for e in events] == [
            "run_created", "run_started", "step_started", "step_completed", "run_completed"]
        assert events[2]["correlation_id"] == "c1"
        assert all(TIMESTAMP.match(e["created_at"]) for e in events)
        assert all(TIMESTAMP.match(s["started_at"]) for s in steps)
    finally:
        conn.close()


async def test_text_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("my notes, not a database\n")
    before = digest(path)
    with pytest.raises(WorldError, match=re.escape(str(path))):
        await SQLiteWorld(str(path)).open()
    assert digest(path) == before
    assert names_in(tmp_path) == ["notes.db"]  # no -wal or -journal file either


async def test_other_apps_sqlite_database_is_refused_and_left_untouched(
        tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(WorldError, match="no worldflow_schema table"):
        await SQLiteWorld(str(path)).open()
    assert digest(path) == before
    assert names_in(tmp_path) == ["app.db"]


async def test_empty_file_becomes_a_worldflow_database(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    world = SQLiteWorld(str(path))
    await world.open()
    try:
        await create(world, "r")
        assert (await world.get_run("r")) is not None
    finally:
        await world.close()


async def test_newer_schema_version_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    world = SQLiteWorld(str(path))
    await world.open()
    await world.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE worldflow_schema SET version = 999")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(SchemaError, match="999"):
        await SQLiteWorld(str(path)).open()
    assert digest(path) == before


async def test_reopening_a_current_database_keeps_its_schema(tmp_path: Path) -> None:
    path = str(tmp_path / "wf.db")
    for _ in range(2):
        world = SQLiteWorld(path)
        await world.open()
        await world.close()
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT version FROM worldflow_schema").fetchall()
        assert rows == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


@pytest.mark.parametrize("options", [{"path": ":memory:"}, {"synchronous": "SOMETIMES"}])
def test_bad_options_are_clear_errors(options: dict[str, Any], tmp_path: Path) -> None:
    options.setdefault("path", str(tmp_path / "wf.db"))
    with pytest.raises(ValueError, match=r"memory world|synchronous must be"):
        SQLiteWorld(**options)


async def test_directory_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WorldError, match="is a directory"):
        await SQLiteWorld(str(tmp_path)).open()


async def test_a_version_1_database_is_upgraded_with_its_queue_intact(tmp_path: Path) -> None:
    from worldflow.worlds.sqlite.schema import _statements

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    for statement in _statements("0001_initial.sql"):
        conn.execute(statement)
    at = "2026-01-01T00:00:00.000000+00:00"
    conn.execute("INSERT INTO worldflow_schema (version) VALUES (1)")
    for run_id, name in (("old-a", "wf_a"), ("old-b", "wf_b")):
        conn.execute("INSERT INTO workflow_runs (id, workflow_name, status, input, created_at, "
                     "updated_at) VALUES (?, ?, 'pending', '{}', ?, ?)", (run_id, name, at, at))
        conn.execute("INSERT INTO workflow_jobs (run_id, available_at, created_at) "
                     "VALUES (?, ?, ?)", (run_id, at, at))
    conn.execute("INSERT INTO workflow_inbox (workflow_run_id, kind, created_at) "
                 "VALUES ('old-b', 'cancel', ?)", (at,))
    conn.execute("INSERT INTO workflow_hooks (token, workflow_run_id, correlation_id, status, "
                 "created_at) VALUES ('tok', 'old-a', 'h1', 'active', ?)", (at,))
    conn.commit()
    conn.close()
    world = SQLiteWorld(str(path))
    await world.open()
    try:
        # the job of old-a got its workflow's name; old-b's pending cancel lets anyone
        assert await world.claim_runs("w", 10, 30.0, workflows={"wf_a"}) == ["old-a",
                                                                            "old-b"]
        hook = await world.get_hook("tok")
        assert hook is not None and hook.metadata is None
    finally:
        await world.close()
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT version FROM worldflow_schema").fetchall()
        assert rows == [(SCHEMA_VERSION,)]
    finally:
        conn.close()


def test_merge_appends_takes_a_runs_next_append_into_its_opening_one() -> None:
    """`log.merge_appends`: an append of step starts takes in its run's next append when
    that continues it (whatever lies between), and says which applied request carries
    each given one; an append that does not continue, another run's, or a write of
    another kind stays as it is."""
    from worldflow.worlds.sqlite.log import Append, merge_appends

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def start(run_id: str, seq: int) -> Append:
        return Append(run_id, [EventRecord(run_id, seq, StepStarted(
            str(seq), "s", 1, Raw(b"[]")), now)], [])

    def done(run_id: str, seq: int, inbox: list[int] | None = None) -> Append:
        return Append(run_id, [EventRecord(run_id, seq, StepCompleted(
            str(seq - 1), "s", 1, Raw(b"1")), now)], inbox or [])

    def other(conn: sqlite3.Connection) -> None:
        return None

    requests = [start("a", 2), start("b", 2), other, done("a", 3, [7]), done("b", 9),
                start("a", 4)]
    out, carried_by = merge_appends(requests)
    assert carried_by == [0, 1, 2, 0, 3, 4]
    merged = out[0]
    assert isinstance(merged, Append)
    assert [r.seq for r in merged.records] == [2, 3] and merged.inbox_ids == [7]
    assert out[1] is requests[1] and out[2] is other and out[3] is requests[4]
    assert out[4] is requests[5]  # "a" has an end-of-step append now: not opening
