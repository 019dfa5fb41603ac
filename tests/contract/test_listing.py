"""Run listing on every world: tags, since, cursor pages, filters combined, and the step
counters kept on the run row."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import uuid
from typing import Any

import pytest
from msgspec import Raw

from worldflow import (
    FatalError,
    RunStatus,
    continue_as_new,
    get_workflow_metadata,
    list_runs,
    retry_run,
    start,
    step,
    workflow,
)
from worldflow.core import listing
from worldflow.core.events import (
    ErrorInfo,
    EventRecord,
    RunCompleted,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
)
from worldflow.core.records import NewRun, RunRecord

BASE = dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.UTC)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def create(world: Any, workflow_name: str, run_id: str | None = None, *,
                 tags: dict[str, str] | None = None,
                 created_at: dt.datetime | None = None) -> str:
    run = NewRun(run_id or uid("run"), workflow_name, Raw(b'{"n":1}'),
                 created_at or world.now(), tags=tags or {})
    record, created = await world.create_run(run, lease_owner=None, lease_seconds=30.0)
    assert created and record.tags == (tags or {})
    return str(record.run_id)


async def append(world: Any, run_id: str, *events: Any) -> None:
    seq = max(e.seq for e in await world.list_events(run_id)) + 1
    await world.append_events(run_id, [EventRecord(run_id, seq + i, e, world.now())
                                       for i, e in enumerate(events)])


def counts(run: RunRecord | None) -> tuple[int, int, int, int]:
    assert run is not None
    return run.steps_total, run.steps_completed, run.steps_failed, run.steps_running


async def all_pages(world: Any, **filters: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = await world.list_runs(cursor=cursor, **filters)
        assert len(page.items) <= filters.get("limit", 50)
        seen += [r.run_id for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("the listing never ended")


# -- the World protocol --------------------------------------------------------------------
async def test_tags_are_stored_with_the_run_and_listed(storage: Any) -> None:
    wf, customer = uid("wf"), uid("c")
    tagged = await create(storage, wf, tags={"customer": customer, "plan": "pro"})
    plain = await create(storage, wf)
    run = await storage.get_run(tagged)
    assert run.tags == {"customer": customer, "plan": "pro"}
    assert (await storage.get_run(plain)).tags == {}
    page = await storage.list_runs(workflow_name=wf)
    assert {r.run_id: r.tags for r in page.items} == {
        tagged: {"customer": customer, "plan": "pro"}, plain: {}}


async def test_tag_filter_keeps_runs_having_every_given_pair(storage: Any) -> None:
    wf, customer = uid("wf"), uid("c")
    pro = await create(storage, wf, tags={"customer": customer, "plan": "pro"})
    free = await create(storage, wf, tags={"customer": customer, "plan": "free"})
    await create(storage, wf, tags={"customer": uid("other"), "plan": "pro"})
    await create(storage, wf)
    one = await storage.list_runs(tags={"customer": customer})
    assert [r.run_id for r in one.items] == [free, pro]
    both = await storage.list_runs(tags={"customer": customer, "plan": "pro"})
    assert [r.run_id for r in both.items] == [pro]
    # the order of the pairs does not matter, nor which one the index walks
    both = await storage.list_runs(tags={"plan": "pro", "customer": customer})
    assert [r.run_id for r in both.items] == [pro]
    assert (await storage.list_runs(tags={"customer": customer, "plan": "x"})).items == []
    assert (await storage.list_runs(tags={"customer": customer, "nokey": "pro"})).items == []
    assert (await storage.list_runs(tags={"customer": uid("nobody")})).items == []


async def test_tag_filter_pages_with_a_cursor_across_equal_timestamps(storage: Any) -> None:
    wf, batch = uid("wf"), uid("b")
    expected = []
    for i in range(23):
        at = BASE + dt.timedelta(seconds=i // 3)  # threes share a created_at
        run_id = f"{wf}-{i:02d}"
        await create(storage, wf, run_id, tags={"batch": batch, "k": "v"}, created_at=at)
        await create(storage, wf, f"{wf}-{i:02d}-untagged", created_at=at)
        expected.append((at, run_id))
    newest_first = [run_id for _, run_id in sorted(expected, reverse=True)]
    assert await all_pages(storage, tags={"batch": batch}, limit=5) == newest_first
    assert await all_pages(storage, tags={"batch": batch, "k": "v"}, limit=4) == newest_first
    exact = await storage.list_runs(tags={"batch": batch}, limit=23)
    assert len(exact.items) == 23 and exact.next_cursor is None


async def test_since_is_an_inclusive_lower_bound_on_created_at(storage: Any) -> None:
    wf, batch = uid("wf"), uid("b")
    ids = [await create(storage, wf, f"{wf}-{i}", tags={"batch": batch},
                        created_at=BASE + dt.timedelta(minutes=i)) for i in range(6)]
    since = BASE + dt.timedelta(minutes=3)
    newest = list(reversed(ids))
    assert await all_pages(storage, workflow_name=wf, since=since, limit=2) == newest[:3]
    assert await all_pages(storage, tags={"batch": batch}, since=since, limit=2) \
        == newest[:3]
    # an aware datetime in another zone is the same instant
    plus_two = since.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert await all_pages(storage, workflow_name=wf, since=plus_two) == newest[:3]


async def test_status_workflow_tag_and_since_filters_combine(storage: Any) -> None:
    wf, other, team = uid("wf"), uid("wf"), uid("t")
    done = await create(storage, wf, tags={"team": team}, created_at=BASE)
    await append(storage, done, RunStarted(), RunCompleted(Raw(b"1")))
    pending = await create(storage, wf, tags={"team": team}, created_at=BASE)
    await create(storage, other, tags={"team": team}, created_at=BASE)
    late_done = await create(storage, wf, tags={"team": team},
                             created_at=BASE + dt.timedelta(hours=1))
    await append(storage, late_done, RunStarted(), RunCompleted(Raw(b"2")))
    page = await storage.list_runs(tags={"team": team}, workflow_name=wf,
                                   status="completed")
    assert [r.run_id for r in page.items] == [late_done, done]
    page = await storage.list_runs(tags={"team": team}, workflow_name=wf, status="pending")
    assert [r.run_id for r in page.items] == [pending]
    page = await storage.list_runs(tags={"team": team}, status="completed",
                                   since=BASE + dt.timedelta(minutes=1))
    assert [r.run_id for r in page.items] == [late_done]


HOSTILE_VALUES = ["", "a=b=c", "' OR 1=1 --", '"}, {"x": "y', "100%_", "zwj\u200dé🚀",
                  "line\nbreak", "\\back\\slash", "v" * 500]


async def test_hostile_tag_values_are_kept_and_matched_exactly(storage: Any) -> None:
    wf, key = uid("wf"), uid("k")
    ids = {value: await create(storage, wf, tags={key: value, "ключ 🔑": value})
           for value in HOSTILE_VALUES}
    for value, run_id in ids.items():
        [run] = (await storage.list_runs(tags={key: value})).items
        assert run.run_id == run_id and run.tags == {key: value, "ключ 🔑": value}
        [run] = (await storage.list_runs(tags={"ключ 🔑": value, key: value})).items
        assert run.run_id == run_id
    assert (await storage.list_runs(tags={key: "100%"})).items == []  # no LIKE


async def test_a_malformed_cursor_is_refused_with_a_tag_filter_too(storage: Any) -> None:
    with pytest.raises(ValueError, match="invalid cursor"):
        await storage.list_runs(tags={"a": "b"}, cursor="not a cursor")


async def test_step_counters_follow_each_step_event(storage: Any) -> None:
    run_id = await create(storage, uid("wf"))
    oops = ErrorInfo("ValueError", "flaky")
    assert counts(await storage.get_run(run_id)) == (0, 0, 0, 0)
    await append(storage, run_id, RunStarted(), StepStarted("c1", "a", 1),
                 StepStarted("c2", "b", 1))
    assert counts(await storage.get_run(run_id)) == (2, 0, 0, 2)
    await append(storage, run_id, StepRetrying("c1", "a", 1, oops, storage.now()))
    assert counts(await storage.get_run(run_id)) == (2, 0, 0, 1)  # c1 pending
    await append(storage, run_id, StepStarted("c1", "a", 2))
    assert counts(await storage.get_run(run_id)) == (2, 0, 0, 2)
    # an attempt started again after a crash (same status) changes nothing
    await append(storage, run_id, StepStarted("c1", "a", 2))
    assert counts(await storage.get_run(run_id)) == (2, 0, 0, 2)
    await append(storage, run_id, StepCompleted("c1", "a", 2, Raw(b"1")),
                 StepFailed("c2", "b", 1, oops), StepStarted("c3", "c", 1))
    assert counts(await storage.get_run(run_id)) == (3, 1, 1, 1)
    [listed] = (await storage.list_runs(workflow_name=(await storage.get_run(run_id))
                                        .workflow_name)).items
    assert counts(listed) == (3, 1, 1, 1)
    steps = await storage.list_steps(run_id)
    assert len(steps) == 3


# -- through the engine -----------------------------------------------------------------
BODY_RUNS: collections.Counter[str] = collections.Counter()


@step(name="ls_flaky", max_retries=3, backoff="10ms")
async def flaky(key: str) -> str:
    BODY_RUNS[key] += 1
    if BODY_RUNS[key] < 3:
        raise ValueError("not yet")
    return key


@step(name="ls_doomed", max_retries=0)
async def doomed(key: str) -> None:
    BODY_RUNS[key + ":doomed"] += 1
    raise FatalError("no")


@step(name="ls_plain")
async def plain(key: str) -> str:
    BODY_RUNS[key + ":plain"] += 1
    return key


@workflow(name="ls_one")
async def one(key: str) -> str:
    return await plain(key)


@workflow(name="ls_mixed")
async def mixed(key: str) -> str:
    await flaky(key)
    try:
        await doomed(key)
    except FatalError:
        pass
    return await plain(key)


@workflow(name="ls_fails_once")
async def fails_once(key: str) -> str:
    await plain(key)
    BODY_RUNS[key + ":wf"] += 1
    if BODY_RUNS[key + ":wf"] == 1:
        await doomed(key)
    return await plain(key + "-2")


@workflow(name="ls_sleepy")
async def sleepy(key: str) -> str:
    await plain(key + "-a")
    await asyncio.sleep(0.2)  # evicted here (keep_alive 0), then replayed
    await flaky(key)
    return await plain(key + "-b")


@workflow(name="ls_child")
async def child(x: int) -> dict[str, str]:
    return {"run_id": get_workflow_metadata().run_id}


@workflow(name="ls_parent")
async def parent(team: str) -> str:
    handle = await start(child, 1, tags={"team": team, "role": "child"})
    await handle.result()
    return handle.run_id


@workflow(name="ls_chain")
async def chain(n: int) -> int:
    if n > 0:
        continue_as_new(n - 1)
    return n


async def test_start_tags_and_list_runs_newest_first(world: Any,
                                                     monkeypatch: Any) -> None:
    monkeypatch.setattr(listing, "PAGE_SIZE", 3)  # several round trips
    batch = uid("b")
    runs = [await start(one, f"{batch}-{i}", world=world,
                        tags={"batch": batch, "parity": str(i % 2)}) for i in range(8)]
    for run in runs:
        await run.result(timeout=30)
    listed = [r async for r in list_runs(tags={"batch": batch}, world=world)]
    assert [r.run_id for r in listed] == [r.run_id for r in reversed(runs)]
    assert listed[0].tags == {"batch": batch, "parity": "1"}
    odd = [r.run_id async for r in list_runs(workflow="ls_one",
                                             tags={"batch": batch, "parity": "1"},
                                             world=world)]
    assert odd == [runs[i].run_id for i in (7, 5, 3, 1)]
    first5 = [r.run_id async for r in list_runs(one, RunStatus.COMPLETED,
                                                tags={"batch": batch}, limit=5,
                                                world=world)]
    assert first5 == [r.run_id for r in reversed(runs)][:5]
    since = (await world.get_run(runs[6].run_id)).created_at
    recent = [r.run_id async for r in list_runs(tags={"batch": batch}, since=since,
                                                world=world)]
    assert recent == [runs[7].run_id, runs[6].run_id]
    assert [r async for r in list_runs(tags={"batch": batch}, status="failed",
                                       world=world)] == []


async def test_step_counters_after_retries_and_a_failed_step(world: Any) -> None:
    key = uid("k")
    run = await start(mixed, key, world=world, tags={"key": key})
    assert await run.result(timeout=30) == key
    record = await world.get_run(run.run_id)
    assert BODY_RUNS[key] == 3 and BODY_RUNS[key + ":doomed"] == 1
    assert counts(record) == (3, 2, 1, 0)  # flaky (3 attempts) counted once
    [listed] = [r async for r in list_runs(tags={"key": key}, world=world)]
    assert counts(listed) == (3, 2, 1, 0)


async def test_step_counters_are_not_recounted_when_an_evicted_run_replays(
        world: Any) -> None:
    world.engine.keep_alive = 0.0
    key = uid("k")
    run = await start(sleepy, key, world=world)
    assert await run.result(timeout=30) == key + "-b"
    assert BODY_RUNS[key + "-a:plain"] == 1 and BODY_RUNS[key] == 3
    assert counts(await world.get_run(run.run_id)) == (3, 3, 0, 0)


async def test_retry_run_keeps_the_tags_and_counts_the_replayed_steps(world: Any) -> None:
    key = uid("k")
    run = await start(fails_once, key, world=world, tags={"key": key})
    with pytest.raises(FatalError):
        await run.result(timeout=30)
    assert counts(await world.get_run(run.run_id)) == (2, 1, 1, 0)
    again = await retry_run(run.run_id, world=world)
    assert await again.result(timeout=30) == key + "-2"
    record = await world.get_run(again.run_id)
    assert record.tags == {"key": key}
    # the first step was replayed from the copied log, not run again
    assert BODY_RUNS[key + ":plain"] == 1 and BODY_RUNS[key + "-2:plain"] == 1
    assert counts(record) == (2, 2, 0, 0)
    listed = [r.run_id async for r in list_runs(tags={"key": key}, world=world)]
    assert listed == [again.run_id, run.run_id]


async def test_a_child_started_with_tags_carries_them(world: Any) -> None:
    team = uid("t")
    run = await start(parent, team, world=world)
    child_id = await run.result(timeout=30)
    [listed] = [r async for r in list_runs(tags={"team": team}, world=world)]
    assert listed.run_id == child_id and listed.tags == {"team": team, "role": "child"}
    assert listed.parent_run_id == run.run_id


async def test_continue_as_new_keeps_the_tags(world: Any) -> None:
    tag = uid("chain")
    run = await start(chain, 2, world=world, tags={"chain": tag})
    await run.result(timeout=30)
    chain_runs = [r async for r in list_runs(tags={"chain": tag}, world=world)]
    assert len(chain_runs) == 3
    assert {r.status for r in chain_runs} == {RunStatus.CONTINUED, RunStatus.COMPLETED}


@pytest.mark.parametrize(("tags", "error", "match"), [
    ({"customer": 42}, TypeError, "'customer' has a int value"),
    ({7: "x"}, TypeError, "tag key 7 is a int"),
    ({"": "x"}, ValueError, "tag key '' must be 1-100"),
    ({"a=b": "x"}, ValueError, "must not contain '='"),
    ({"k" * 101: "x"}, ValueError, "must be 1-100"),
    ({"k": "v" * 501}, ValueError, "at most 500"),
    ({f"k{i}": "v" for i in range(33)}, ValueError, "at most 32 tags"),
    (["customer", "42"], TypeError, "must be a dict"),
])
async def test_bad_tags_are_refused_and_nothing_is_started(
        world: Any, tags: Any, error: type[Exception], match: str) -> None:
    before = (await world.list_runs(workflow_name="ls_one", limit=1000)).items
    with pytest.raises(error, match=match):
        await start(one, "x", world=world, tags=tags)
    assert (await world.list_runs(workflow_name="ls_one", limit=1000)).items == before


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"status": "done"}, ValueError, "status must be one of"),
    ({"since": dt.datetime(2026, 1, 1)}, ValueError, "timezone-aware"),
    ({"since": "yesterday"}, TypeError, "since must be a datetime"),
    ({"limit": -1}, ValueError, "limit must be None or an int"),
    ({"workflow": 3}, TypeError, "workflow must be a @workflow"),
    ({"tags": {"a": 1}}, TypeError, "'a' has a int value"),
])
async def test_list_runs_refuses_bad_filters(memory_world: Any, options: dict[str, Any],
                                             error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        [r async for r in list_runs(world=memory_world, **options)]
