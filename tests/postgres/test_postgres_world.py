"""Postgres-specific promises: setup, schema versions, the seed's queries, job prefixes,
group commit, and clear errors for bad connections."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import msgspec
import pytest

from worldflow import RunStatus, create_world, start, step, workflow
from worldflow.cli.postgres_setup import postgres_setup
from worldflow.errors import SchemaError, WorldError
from worldflow.worlds.postgres.schema import SCHEMA_VERSION


@step(name="pg_inc")
async def inc(x: int) -> int:
    return x + 1


@step(name="pg_boom", max_retries=0)
async def boom() -> None:
    raise ValueError("boom")


@workflow(name="pg_flow")
async def flow(x: int) -> int:
    return await inc(await inc(x))


@workflow(name="pg_failing")
async def failing() -> None:
    await boom()


def pg_world(url: str, **options: Any) -> Any:
    options.setdefault("job_prefix", "p" + uuid.uuid4().hex[:10])
    return create_world("postgres", connection_string=url, **options)


async def test_setup_is_idempotent_and_reports_the_version(own_db: str) -> None:
    postgres_url = own_db
    first = await postgres_setup(postgres_url)
    again = await postgres_setup(postgres_url)
    assert f"-> {SCHEMA_VERSION}" in first
    assert f"up to date (version {SCHEMA_VERSION})" in again
    conn = await asyncpg.connect(postgres_url)
    try:
        tables = {r[0] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public'")}
        versions = await conn.fetch("SELECT version FROM worldflow_schema_version")
    finally:
        await conn.close()
    assert {"workflow_runs", "workflow_events", "workflow_steps", "workflow_hooks",
            "workflow_streams", "workflow_jobs", "worldflow_schema_version"} <= tables
    assert [r[0] for r in versions] == list(range(1, SCHEMA_VERSION + 1))


async def test_a_newer_schema_is_refused_and_left_unchanged(postgres_url: str) -> None:
    base = postgres_url.rsplit("/", 1)[0]
    name = f"wf_newer_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(f"{base}/{name}")
        await conn.execute("CREATE TABLE worldflow_schema_version (version integer NOT NULL, "
                           "applied_at timestamptz NOT NULL DEFAULT now())")
        await conn.execute("INSERT INTO worldflow_schema_version (version) VALUES (99)")
        with pytest.raises(SchemaError, match="version 99, newer"):
            await postgres_setup(f"{base}/{name}")
        with pytest.raises(SchemaError):
            async with pg_world(f"{base}/{name}"):
                pass
        tables = [r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        await conn.close()
        assert tables == ["worldflow_schema_version"]
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_version_1_database_is_upgraded_with_its_queue_intact(own_db: str) -> None:
    from worldflow.worlds.postgres.schema import apply_migrations

    conn = await asyncpg.connect(own_db)
    try:
        async with conn.transaction():
            await apply_migrations(conn, 1)
            for run_id, name in (("old-a", "wf_a"), ("old-b", "wf_b")):
                await conn.execute(
                    "INSERT INTO workflow_runs (id, workflow_name, status, input, created_at, "
                    "updated_at) VALUES ($1, $2, 'pending', '{}', now(), now())", run_id, name)
                await conn.execute(
                    "INSERT INTO workflow_jobs (run_id, job_prefix, available_at, created_at) "
                    "VALUES ($1, 'up', now() - interval '1 minute', now())", run_id)
            await conn.execute("INSERT INTO workflow_inbox (workflow_run_id, kind, created_at) "
                               "VALUES ('old-b', 'cancel', now())")
    finally:
        await conn.close()
    world = pg_world(own_db, job_prefix="up")
    await world.open()
    try:
        claimed = await world.claim_runs("w", 10, 30.0, workflows={"wf_a"})
        assert sorted(claimed) == ["old-a", "old-b"]  # old-b: its pending cancel
    finally:
        await world.close()
    again = await postgres_setup(own_db)
    assert f"up to date (version {SCHEMA_VERSION})" in again


async def test_the_seed_debug_queries_run_as_written(own_db: str) -> None:
    postgres_url = own_db
    async with pg_world(postgres_url, queue_concurrency=20) as world:
        ok = await start(flow, 1, world=world, run_id=f"run-{uuid.uuid4().hex[:8]}")
        bad = await start(failing, world=world)
        assert await ok.result(timeout=30) == 3
        with pytest.raises(Exception, match="boom"):
            await bad.result(timeout=30)
    conn = await asyncpg.connect(postgres_url)
    try:
        latest = await conn.fetch("SELECT * FROM workflow_runs ORDER BY started_at DESC "
                                  "LIMIT 10")
        failed = await conn.fetch("SELECT * FROM workflow_runs WHERE status = 'failed'")
        steps = await conn.fetch(f"SELECT * FROM workflow_steps WHERE workflow_run_id = "
                                 f"'{ok.run_id}'")
    finally:
        await conn.close()
    assert ok.run_id in {r["id"] for r in latest}
    assert bad.run_id in {r["id"] for r in failed}
    assert [(r["step_name"], r["status"], r["output"]) for r in steps] == [
        ("pg_inc", "completed", "2"), ("pg_inc", "completed", "3")]
    assert set(latest[0].keys()) >= {"id", "workflow_name", "status", "input", "output",
                                     "error", "started_at", "completed_at", "created_at",
                                     "updated_at"}


async def test_two_job_prefixes_never_run_each_others_jobs(postgres_url: str) -> None:
    app_a = pg_world(postgres_url, job_prefix="app_a" + uuid.uuid4().hex[:6])
    app_b = pg_world(postgres_url, job_prefix="app_b" + uuid.uuid4().hex[:6])
    await app_a.open()  # storage only: A never processes its queue here
    try:
        async with app_b:
            run = await start(flow, 10, world=app_a)
            await asyncio.sleep(1.0)
            assert await app_b.get_run(run.run_id) is not None  # one database
            assert (await app_a.get_run(run.run_id)).status == RunStatus.PENDING
            assert await app_b.claim_runs("b-worker", 10, 30.0) == []
        async with pg_world(postgres_url, job_prefix=app_a.job_prefix) as a_worker:
            assert await (await a_worker_run(a_worker, run.run_id)).result(timeout=30) == 12
    finally:
        await app_a.close()


async def a_worker_run(world: Any, run_id: str) -> Any:
    from worldflow import get_run

    return await get_run(run_id, world=world)


async def test_group_commit_puts_many_runs_in_few_transactions(postgres_url: str) -> None:
    async with pg_world(postgres_url, queue_concurrency=50) as world:
        before = world.commits
        runs = [await start(flow, i, world=world) for i in range(100)]
        assert await asyncio.gather(*(r.result(timeout=60) for r in runs)) == [
            i + 2 for i in range(100)]
        # 100 runs x (create + 2 steps x 2 events + end) = 600 writes
        assert world.commits - before < 300


async def test_unreachable_server_fails_fast_naming_host_and_port() -> None:
    world = create_world("postgres", connection_string="postgresql://root@127.0.0.1:1/x",
                         connect_timeout=2)
    t0 = time.monotonic()
    with pytest.raises(WorldError, match=r"127\.0\.0\.1:1"):
        await world.open()
    assert time.monotonic() - t0 < 5


async def test_bad_database_gives_the_server_message(postgres_url: str) -> None:
    base = postgres_url.rsplit("/", 1)[0]
    world = create_world("postgres", connection_string=f"{base}/no_such_db_{uuid.uuid4().hex}")
    with pytest.raises(WorldError, match="does not exist"):
        await world.open()
    bad_user = postgres_url.replace("root@", "nobody_here@")
    with pytest.raises(WorldError, match="nobody_here"):
        await create_world("postgres", connection_string=bad_user).open()


def test_missing_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKFLOW_POSTGRES_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ValueError, match="WORKFLOW_POSTGRES_URL"):
        create_world("postgres")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKFLOW_TARGET_WORLD", "postgres")
    monkeypatch.delenv("WORKFLOW_POSTGRES_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.example:6543/app")
    monkeypatch.setenv("WORKFLOW_POSTGRES_JOB_PREFIX", "billing")
    monkeypatch.setenv("WORKFLOW_POSTGRES_WORKER_CONCURRENCY", "7")
    world = create_world()
    assert (world.address, world.job_prefix, world.queue_concurrency) == (
        "db.example:6543", "billing", 7)
    monkeypatch.setenv("WORKFLOW_POSTGRES_WORKER_CONCURRENCY", "zero")
    with pytest.raises(ValueError, match="WORKFLOW_POSTGRES_WORKER_CONCURRENCY"):
        create_world()


@workflow(name="pg_sleepy")
async def sleepy(x: int) -> int:
    from worldflow import sleep

    await sleep("300ms")
    return await inc(x)


async def test_a_payload_that_cannot_be_decoded_fails_only_its_run(own_db: str) -> None:
    # a database of its own: other tests read every run of the session's database
    postgres_url = own_db
    async with pg_world(postgres_url, keep_alive=0.0) as world:
        broken = await start(sleepy, 1, world=world)
        bad_input = await start(sleepy, 2, world=world)
        for _ in range(500):  # both evicted while sleeping: they will be replayed
            if not ({broken.run_id, bad_input.run_id} & set(world.engine.actors)):
                break
            await asyncio.sleep(0.01)
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute("UPDATE workflow_events SET payload = '{\"type\": \"nope\"}' "
                               "WHERE workflow_run_id = $1 AND seq = 1", broken.run_id)
            await conn.execute("UPDATE workflow_runs SET input = '[1]' WHERE id = $1",
                               bad_input.run_id)
        finally:
            await conn.close()
        other = await start(flow, 7, world=world)
        assert await other.result(timeout=30) == 9
        for run, reason in ((broken, "seq 1 cannot be decoded"),
                            (bad_input, "input cannot be decoded")):
            with pytest.raises(Exception, match=reason):
                await run.result(timeout=30)
            record = await world.get_run(run.run_id)
            assert record.status == RunStatus.FAILED
            assert record.error.type == "CorruptRecordError"


# -- merged appends ---------------------------------------------------------------------
def _append(run_id: str, seqs: range, *, hook: bool = False,
            finished: bool = False) -> Any:
    import datetime as dt

    from worldflow.worlds.postgres.messages import AppendWrite, EventRow
    from worldflow.worlds.projection import HookDisposed, RunStarted

    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ops: list[Any] = [HookDisposed("tok", at) if hook else RunStarted(run_id, at)]
    return AppendWrite(run_id=run_id, ops=ops, inbox_ids=[],
                       finished_at=at if finished else None,
                       events=[EventRow(s, "step_started", str(s), "{}", at) for s in seqs])


def test_consecutive_appends_of_a_run_are_sent_as_one() -> None:
    from worldflow.worlds.postgres.writer import merge_appends

    a1, b1, a2, a3 = (_append("a", range(1, 3)), _append("b", range(1, 2)),
                      _append("a", range(3, 4)), _append("a", range(4, 6)))
    sent, sent_as = merge_appends([a1, b1, a2, a3])
    assert sent_as == [0, 1, 0, 0]
    assert [e.seq for e in sent[0].events] == [1, 2, 3, 4, 5]
    assert sent[0].ops == a1.ops + a2.ops + a3.ops
    assert sent[1] == b1


def test_appends_that_must_fail_alone_are_not_merged() -> None:
    from worldflow.worlds.postgres.writer import merge_appends

    gap = [_append("a", range(1, 2)), _append("a", range(3, 4))]  # the fence must see it
    hooks = [_append("a", range(1, 2)), _append("a", range(2, 3), hook=True)]
    ended = [_append("a", range(1, 2), finished=True), _append("a", range(2, 3))]
    for writes in (gap, hooks, ended):
        sent, sent_as = merge_appends(writes)
        assert sent == writes and sent_as == [0, 1]


async def test_a_run_created_by_another_process_at_the_same_moment_is_returned(
        own_db: str) -> None:
    """Two processes starting the same run id race: both look, find nothing and insert.
    The loser's insert waits on the winner's row and then hits the primary key; it must
    get the winner's run back (created=False), not a LeaseLostError."""
    import datetime as dt

    from worldflow.core.records import NewRun

    world = pg_world(own_db)
    await world.open()
    try:
        other = await asyncpg.connect(own_db)
        try:
            now = dt.datetime.now(dt.UTC)
            tx = other.transaction()
            await tx.start()
            # "another process" has inserted the run but not committed yet
            await other.execute(
                "INSERT INTO workflow_runs (id, workflow_name, status, input, created_at, "
                "updated_at, queue) VALUES ('race-1', 'pg_flow', 'pending', "
                "'{\"args\":[1],\"kwargs\":{}}', $1, $1, 'default')", now)
            new = NewRun("race-1", "pg_flow", msgspec.Raw(b'{"args":[1],"kwargs":{}}'), now)
            ours = asyncio.ensure_future(world.create_run(new, lease_owner=None,
                                                          lease_seconds=30))
            await asyncio.sleep(0.5)  # our insert now waits on the other's row
            assert not ours.done()
            await tx.commit()
            record, created = await asyncio.wait_for(ours, 10)
            assert created is False and record.run_id == "race-1"
        finally:
            await other.close()
    finally:
        await world.close()


async def test_a_nul_in_one_writes_id_fails_only_that_write(own_db: str) -> None:
    """Postgres text cannot hold NUL: a run id with one is refused with an error saying
    so, and the runs created in the same batch are committed."""
    import datetime as dt

    from worldflow.core.records import NewRun

    world = pg_world(own_db)
    await world.open()
    try:
        now = dt.datetime.now(dt.UTC)
        news = [NewRun(run_id, "pg_flow", msgspec.Raw(b'{"args":[1],"kwargs":{}}'), now)
                for run_id in ("nul-ok-1", "nul\x00bad", "nul-ok-2")]
        results = await asyncio.gather(
            *(world.create_run(n, lease_owner=None, lease_seconds=30) for n in news),
            return_exceptions=True)
        assert isinstance(results[1], WorldError) and "NUL" in str(results[1])
        for ok in (results[0], results[2]):
            assert not isinstance(ok, BaseException) and ok[1] is True
        assert (await world.get_run("nul-ok-1")) is not None
        assert (await world.get_run("nul-ok-2")) is not None
    finally:
        await world.close()


async def test_values_are_stored_byte_for_byte(own_db: str) -> None:
    """Inputs, outputs and event payloads are stored as the JSON they were written as,
    with escapes (a NUL, quotes, non-ASCII) intact, and read back equal."""
    value = {"nul": "a\x00b", "quote": 'say "hi"', "text": "héllo ☃", "n": [1.5, 10**20]}
    async with pg_world(own_db) as world:
        run = await start(echo_flow, value, world=world)
        assert await run.result(timeout=30) == value
        conn = await asyncpg.connect(own_db)
        try:
            stored = await conn.fetchval(
                "SELECT output::text FROM workflow_steps WHERE workflow_run_id = $1",
                run.run_id)
        finally:
            await conn.close()
        assert stored == msgspec.json.encode(value).decode()


@step(name="pg_echo_step")
async def echo_step(value: Any) -> Any:
    return value


@workflow(name="pg_echo_flow")
async def echo_flow(value: Any) -> Any:
    return await echo_step(value)


async def test_a_hook_token_taken_by_another_process_at_the_same_moment_conflicts(
        own_db: str) -> None:
    """Two processes create the same hook token at once: both look, find nothing and
    insert. The loser's insert waits on the winner's row; it must get HookConflictError,
    never take the live token over."""
    import datetime as dt

    from worldflow.core.events import EventRecord, HookCreated, RunStarted
    from worldflow.core.records import NewRun
    from worldflow.errors import HookConflictError

    world = pg_world(own_db)
    await world.open()
    try:
        now = dt.datetime.now(dt.UTC)
        raw = msgspec.Raw(b'{"args":[],"kwargs":{}}')
        await world.create_run(NewRun("taker", "pg_flow", raw, now), lease_owner=None,
                               lease_seconds=30)
        await world.append_events("taker", [EventRecord("taker", 1, RunStarted(), now)])
        other = await asyncpg.connect(own_db)
        try:
            tx = other.transaction()
            await tx.start()
            # "another process" has created the hook but not committed yet
            await other.execute(
                "INSERT INTO workflow_hooks (token, workflow_run_id, correlation_id, status, "
                "created_at) VALUES ('shared-token', 'holder', 'h1', 'active', $1)", now)
            ours = asyncio.ensure_future(world.append_events("taker", [
                EventRecord("taker", 2, HookCreated("h1", "shared-token"), now)]))
            await asyncio.sleep(0.5)  # our insert now waits on the other's row
            assert not ours.done()
            await tx.commit()
            with pytest.raises(HookConflictError):
                await asyncio.wait_for(ours, 10)
        finally:
            await other.close()
        hook = await world.get_hook("shared-token")
        assert hook is not None and hook.run_id == "holder"
        assert [e.seq for e in await world.list_events("taker")] == [0, 1]
    finally:
        await world.close()


async def test_several_writers_share_the_runs_and_keep_each_runs_order(
        postgres_url: str) -> None:
    """writers=3: each run's writes go through one writer, in order; every writer
    commits some of the runs; results are right."""
    async with pg_world(postgres_url, queue_concurrency=50, writers=3) as world:
        runs = [await start(flow, i, world=world) for i in range(150)]
        assert await asyncio.gather(*(r.result(timeout=60) for r in runs)) == [
            i + 2 for i in range(150)]
        assert all(w.queue.commits > 0 for w in world._writers)
        for run in runs[:10]:
            seqs = [e.seq for e in await world.list_events(run.run_id)]
            assert seqs == list(range(len(seqs)))


@pytest.mark.parametrize("writers", [0, 9, "2", True, 1.5])
def test_writers_must_be_a_small_integer(writers: Any) -> None:
    with pytest.raises(ValueError, match="writers must be an integer from 1 to 8"):
        create_world("postgres", connection_string="postgresql://x@127.0.0.1/x",
                     writers=writers)


def test_writers_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKFLOW_POSTGRES_WRITERS", "2")
    world = create_world("postgres", connection_string="postgresql://x@127.0.0.1/x")
    assert world.writers == 2
    monkeypatch.setenv("WORKFLOW_POSTGRES_WRITERS", "two")
    with pytest.raises(ValueError, match="WORKFLOW_POSTGRES_WRITERS"):
        create_world("postgres", connection_string="postgresql://x@127.0.0.1/x")


async def test_a_batch_aborted_by_a_deadlock_is_sent_again(postgres_url: str) -> None:
    """The server breaks a deadlock between two writers' batches by aborting one; that
    batch was rolled back whole, so the writer sends it again and no caller sees it."""
    class DeadlockOnce:
        """The writer's connection, whose first batch the server aborts."""

        def __init__(self, conn: Any) -> None:
            self.conn, self.calls = conn, 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self.conn, name)

        async def fetchval(self, *args: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
            return await self.conn.fetchval(*args)

    async with pg_world(postgres_url) as world:
        [writer] = world._writers
        conn = writer._conn
        flaky = DeadlockOnce(conn)
        writer._conn = flaky
        try:
            run = await start(flow, 5, world=world)
            assert await run.result(timeout=30) == 7
        finally:
            writer._conn = conn
        assert flaky.calls >= 2


async def test_a_step_started_and_completed_in_one_append_reads_as_one_row(
        own_db: str) -> None:
    """The usual live path writes a step's start and completion in one append: the
    workflow_steps view shows one row, completed, with both times, and the run's
    counters agree. A step with an attempt before a crash reads as its latest attempt."""
    import datetime as dt

    from worldflow.core.events import EventRecord, RunStarted, StepCompleted, StepStarted
    from worldflow.core.records import NewRun

    world = pg_world(own_db)
    await world.open()
    conn = await asyncpg.connect(own_db)
    try:
        t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        t1 = t0 + dt.timedelta(seconds=1)
        raw = msgspec.Raw(b'{"args":[],"kwargs":{}}')
        await world.create_run(NewRun("fused", "pg_flow", raw, t0), lease_owner=None,
                               lease_seconds=30)
        await world.append_events("fused", [EventRecord("fused", 1, RunStarted(), t0)])
        await world.append_events("fused", [
            EventRecord("fused", 2, StepStarted("1", "s", 1, msgspec.Raw(b"[7]")), t0),
            EventRecord("fused", 3, StepCompleted("1", "s", 1, msgspec.Raw(b'"x"')), t1)])
        row = await conn.fetchrow(
            "SELECT status, attempt, input::text, output::text, started_at, completed_at "
            "FROM workflow_steps WHERE id = 'fused:1'")
        assert (row["status"], row["attempt"], row["input"], row["output"]) == (
            "completed", 1, "[7]", '"x"')
        assert (row["started_at"], row["completed_at"]) == (t0, t1)
        # step 2: a first attempt started (its worker died); the retry's start and
        # completion in one append
        await world.append_events("fused", [
            EventRecord("fused", 4, StepStarted("2", "s", 1), t0)])
        await world.append_events("fused", [
            EventRecord("fused", 5, StepStarted("2", "s", 2), t1),
            EventRecord("fused", 6, StepCompleted("2", "s", 2, msgspec.Raw(b"2")), t1)])
        row = await conn.fetchrow("SELECT status, attempt, input::text, output::text, "
                                  "started_at FROM workflow_steps WHERE id = 'fused:2'")
        assert tuple(row) == ("completed", 2, "null", "2", t0)
        run = await world.get_run("fused")
        assert run is not None
        assert (run.steps_total, run.steps_completed, run.steps_running,
                run.steps_failed) == (2, 2, 0, 0)
    finally:
        await conn.close()
        await world.close()
