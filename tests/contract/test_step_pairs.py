"""A step started and completed in one append is written as one row: the worlds find
such pairs with `projection.step_completions`, and the Postgres writer, merging a run's
appends, moves each completion up to its start (`completions_after_starts`) so that the
SQL, which pairs adjacent ops, sees them. Moving ops must change nothing else."""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from worldflow.worlds.projection import (
    ProjectionOp,
    RunFinished,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
    completions_after_starts,
    step_completions,
)

T = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
RAW = msgspec.Raw(b"1")


def started(step: str, attempt: int = 1) -> StepStarted:
    return StepStarted(f"r:{step}", "r", step, "s", attempt, RAW, T)


def completed(step: str, attempt: int = 1) -> StepCompleted:
    return StepCompleted(f"r:{step}", attempt, RAW, T)


def retrying(step: str, attempt: int = 1) -> StepRetrying:
    return StepRetrying(f"r:{step}", attempt, None)


def test_parallel_steps_come_out_as_pairs() -> None:
    ops: list[ProjectionOp] = [RunStarted("r", T), started("a"), started("b"), started("c"),
                               completed("b"), completed("a"), completed("c"),
                               RunFinished("r", "completed", T)]
    assert step_completions(ops) == {1: 5, 2: 4, 3: 6}
    assert completions_after_starts(ops) == [
        RunStarted("r", T), started("a"), completed("a"), started("b"), completed("b"),
        started("c"), completed("c"), RunFinished("r", "completed", T)]


def test_a_retry_between_start_and_completion_is_not_a_pair() -> None:
    ops: list[ProjectionOp] = [started("a"), retrying("a"), started("a", 2),
                               started("b"), completed("a", 2)]
    assert step_completions(ops) == {2: 4}
    assert completions_after_starts(ops) == [
        started("a"), retrying("a"), started("a", 2), completed("a", 2), started("b")]


def test_ops_without_pairs_out_of_place_are_returned_as_they_are() -> None:
    ops: list[ProjectionOp] = [started("a"), completed("a"), completed("b"), started("c")]
    assert completions_after_starts(ops) is ops


_op = st.one_of(
    st.builds(started, st.sampled_from("abc"), st.integers(1, 2)),
    st.builds(completed, st.sampled_from("abc"), st.integers(1, 2)),
    st.builds(retrying, st.sampled_from("abc")),
    st.builds(lambda s: StepFailed(f"r:{s}", 1, None, T), st.sampled_from("abc")),
    st.just(RunStarted("r", T)),
)


def _step_of(op: ProjectionOp) -> str | None:
    return getattr(op, "step_id", None)


@given(st.lists(_op, max_size=12).map(lambda ops: [*ops, RunFinished("r", "failed", T)]))
def test_moving_completions_keeps_each_steps_order_and_the_runs(
        ops: list[ProjectionOp]) -> None:
    out = completions_after_starts(ops)
    assert sorted(map(repr, out)) == sorted(map(repr, ops))  # the same ops
    for step in ("r:a", "r:b", "r:c", None):  # each step's ops, and the run's, in order
        assert [op for op in out if _step_of(op) == step] == [
            op for op in ops if _step_of(op) == step]
    assert out[-1] == ops[-1]  # the run's end stays last
    for i, j in step_completions(out).items():  # every pair found is now adjacent
        assert j == i + 1
