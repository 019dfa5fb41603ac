"""The example's data-processing workflow on the memory world: results, statuses, the
steps table and how many times each step body ran (counted from the log lines every
step body writes)."""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from examples import data_processing as example
from worldflow import FatalError, RunStatus, StepStatus, create_world, start

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from worldflow.core.records import StepRecord

    BodyRuns = Callable[[], collections.Counter[str]]

#: the result of `data_processing(10)`: item 7 fails, items 4-6 are over the threshold
EXPECTED_10 = {
    "fetched": 10,
    "processed": 9,
    "failed": [{"id": 7, "error": "no enrichment data for item 7"}],
    "reviewed": [4, 5, 6],
    "total_amount": sum((i * 137) % 1000 for i in range(1, 11) if i != 7),
    "total_score": sum((i * 137) % 1000 // 10 for i in range(1, 11) if i != 7),
}


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example pauses 100ms between batches and before a retry; 1ms will do here."""
    monkeypatch.setattr(example, "PAUSE", "1ms")


@pytest.fixture
def body_runs(caplog: pytest.LogCaptureFixture) -> Callable[[], collections.Counter[str]]:
    """Counts step body executions so far: "process_item 3 attempt 1" counts as
    "process_item 3"."""
    caplog.set_level(logging.INFO, logger=example.logger.name)

    def count() -> collections.Counter[str]:
        return collections.Counter(" ".join(r.getMessage().split()[:2]) for r in caplog.records
                                   if r.name == example.logger.name)

    return count


def first_arg(record: StepRecord) -> Any:
    assert record.input is not None
    return msgspec.json.decode(record.input)["args"][0]


async def test_data_processing_completes_with_the_expected_result(memory_world: Any) -> None:
    run = await start(example.data_processing, 10, world=memory_world)
    assert await run.result(timeout=20) == EXPECTED_10
    assert await run.status() == RunStatus.COMPLETED


async def test_partial_failure_runs_the_failing_branch_once_and_completes_the_others(
        memory_world: Any, body_runs: BodyRuns) -> None:
    run = await start(example.data_processing, 10, world=memory_world)
    result = await run.result(timeout=20)
    assert result["failed"] == [{"id": 7, "error": "no enrichment data for item 7"}]
    assert await run.status() == RunStatus.COMPLETED

    counts = body_runs()
    assert counts["process_item 7"] == 1  # FatalError: no retry
    assert counts["process_item 3"] == 2  # RetryableError once, then success
    for item_id in set(range(1, 11)) - {3, 7}:
        assert counts[f"process_item {item_id}"] == 1

    process_rows = {first_arg(s)["id"]: s for s in await run.steps()
                    if s.step_name == "process_item"}
    assert sorted(process_rows) == list(range(1, 11))
    failed = process_rows.pop(7)
    assert (failed.status, failed.attempt) == (StepStatus.FAILED, 1)
    assert failed.error is not None and failed.error.type == "FatalError"
    assert failed.error.fatal and failed.error.message == "no enrichment data for item 7"
    assert all(s.status == StepStatus.COMPLETED for s in process_rows.values())
    assert process_rows.pop(3).attempt == 2
    assert {s.attempt for s in process_rows.values()} == {1}


async def test_every_step_body_runs_once_except_the_retried_one(
        memory_world: Any, body_runs: BodyRuns) -> None:
    run = await start(example.data_processing, 10, world=memory_world)
    await run.result(timeout=20)
    counts = body_runs()
    expected = collections.Counter({"fetch_items 10": 1, "aggregate 9": 1})
    expected.update(f"validate_item {i}" for i in range(1, 11))
    expected.update(f"process_item {i}" for i in range(1, 11))
    expected["process_item 3"] += 1
    expected.update(f"review_item {i}" for i in (4, 5, 6))
    # "publish_batch [1," etc.: three batches of at most BATCH_SIZE
    publish = {key: n for key, n in counts.items() if key.startswith("publish_batch")}
    assert sum(publish.values()) == 3 and set(publish.values()) == {1}
    assert {k: n for k, n in counts.items() if not k.startswith("publish_batch")} == expected


async def test_steps_table_lists_every_step_in_program_order(memory_world: Any) -> None:
    run = await start(example.data_processing, 10, world=memory_world)
    await run.result(timeout=20)
    steps = await run.steps()
    names = [s.step_name for s in steps]
    assert names == (["fetch_items"] + ["validate_item"] * 10 + ["process_item"] * 10
                     + ["review_item"] * 3 + ["publish_batch"] * 3 + ["aggregate"])
    assert [first_arg(s)["id"] for s in steps if s.step_name == "validate_item"] == list(
        range(1, 11))
    assert all(s.step_id == f"{run.run_id}:{s.correlation_id}" for s in steps)
    batches = [[item["id"] for item in first_arg(s)] for s in steps
               if s.step_name == "publish_batch"]
    assert batches == [[1, 2, 3, 4], [5, 6, 8, 9], [10]]


async def test_conditional_branch_reviews_only_items_over_the_threshold(
        memory_world: Any, body_runs: BodyRuns) -> None:
    everything = await start(example.data_processing, 10, 0, world=memory_world)
    assert (await everything.result(timeout=20))["reviewed"] == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    nothing = await start(example.data_processing, 10, threshold=2000, world=memory_world)
    assert (await nothing.result(timeout=20))["reviewed"] == []
    assert not any(s.step_name == "review_item" for s in await nothing.steps())
    counts = body_runs()
    assert sum(n for key, n in counts.items() if key.startswith("review_item")) == 9


async def test_loop_of_steps_pauses_durably_between_batches(memory_world: Any) -> None:
    run = await start(example.data_processing, 10, world=memory_world)
    await run.result(timeout=20)
    events = [e.event_type for e in await memory_world.list_events(run.run_id)]
    assert events.count("wait_created") == events.count("wait_completed") == 2
    assert events[0] == "run_created" and events[-1] == "run_completed"


@pytest.fixture
async def evicting_world() -> AsyncIterator[Any]:
    """A memory world that evicts a run whenever it waits, so every sleep and retry
    backoff ends in a replay of the log."""
    world = create_world("memory", keep_alive=0)
    async with world:
        yield world


async def test_replay_after_every_wait_gives_the_same_result_and_reruns_no_step(
        evicting_world: Any, body_runs: BodyRuns, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(example, "PAUSE", "20ms")
    caplog.set_level(logging.DEBUG, logger="worldflow.run")
    run = await start(example.data_processing, 10, world=evicting_world)
    assert await run.result(timeout=20) == EXPECTED_10
    evictions = [r for r in caplog.records if r.getMessage().endswith("evicted")]
    assert len(evictions) >= 2  # at least the two pauses between batches
    counts = body_runs()
    assert counts["process_item 3"] == 2
    assert all(n == 1 for key, n in counts.items() if key != "process_item 3")


async def test_starting_the_same_run_id_twice_gives_one_run(
        memory_world: Any, body_runs: BodyRuns) -> None:
    first = await start(example.data_processing, 4, world=memory_world, run_id="nightly-1")
    second = await start(example.data_processing, 4, world=memory_world, run_id="nightly-1")
    assert first.run_id == second.run_id == "nightly-1"
    assert await first.result(timeout=20) == await second.result(timeout=20)
    assert body_runs()["fetch_items 4"] == 1


async def test_steps_without_metadata_are_unit_testable_directly() -> None:
    items = await example.fetch_items(2)
    assert items == [{"id": 1, "name": " Item 1 ", "amount": 137},
                     {"id": 2, "name": " Item 2 ", "amount": 274}]
    assert (await example.validate_item(items[0]))["name"] == "item 1"
    with pytest.raises(FatalError, match="non-negative"):
        await example.validate_item({"id": 9, "name": "x", "amount": -1})
    assert (await example.review_item({"id": 1}))["reviewed"] is True
