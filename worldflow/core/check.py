"""The deploy check: replay runs' logs against the workflow code imported now.

`check_replay(run_id)` does what a worker does when it replays a run (the same
matching of each recorded call against the code: `RunActor._replay`), but runs no
step body, starts no timer and writes nothing to the world: it only reads the run and
its log. Where the code and the log disagree it raises the `NonDeterminismError` the
run would fail with; otherwise it returns, having replayed the whole log (a finished
run through to its end, a running run through its last event).

`check_runs` checks many runs, for the `worldflow check-replay` command (one read of
each log: thousands of runs a second on SQLite and Postgres, see
benchmarks/check_replay.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any, cast

from worldflow.core import runtime
from worldflow.core.actor import RunActor, new_instance
from worldflow.core.events import (
    TERMINAL_EVENTS,
    RunCompleted,
    RunStarted,
)
from worldflow.core.instance import TimerCall
from worldflow.core.registry import get_workflow
from worldflow.core.runtime import default_world
from worldflow.errors import (
    CorruptRecordError,
    NonDeterminismError,
    RegistrationError,
    RunNotFoundError,
    WorldError,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from worldflow.core.engine import Engine
    from worldflow.core.events import EventRecord
    from worldflow.core.instance import WorkflowInstance
    from worldflow.core.records import RunRecord
    from worldflow.core.world import World

__all__ = ["ReplayResult", "check_replay", "check_runs", "replay_log"]

#: runs `check_runs` replays between two yields to the event loop
BATCH = 200


async def check_replay(run_id: str, world: World | None = None) -> None:
    """Replay run `run_id`'s log against the workflow code registered now, running no
    step and writing nothing. Without `world`: the default world, or if there is none
    yet, the world the environment names, opened for reading only (no engine starts).

    Raises `NonDeterminismError` (naming the workflow, the position, what the log
    records there and what the code does) where they disagree, `RunNotFoundError` for
    an unknown run, `RegistrationError` if the run's workflow is not registered in this
    process (import the module that defines it first), `CorruptRecordError` if the
    run's log cannot be decoded. Returns None when the code replays the whole log.
    """
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"check_replay(run_id=...) must be a non-empty string, got "
                        f"{run_id!r:.80}")
    if world is None:
        world = default_world()
    if world is None:
        # no default world yet: open one from the environment for reading only (starting
        # it would start an engine, which would run the world's runs)
        if runtime._factory is None:
            raise RuntimeError("no default world: pass world=...")
        reader = runtime._factory()
        await reader.open()
        try:
            await _check_one(reader, run_id)
        finally:
            await asyncio.shield(reader.close())
        return
    await _check_one(world, run_id)


async def _check_one(world: World, run_id: str) -> None:
    run = await world.get_run(run_id)
    if run is None:
        raise RunNotFoundError(f"run not found: {run_id}")
    replay_log(run, await world.list_events(run_id))


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayResult:
    """One run's check: `error` is None when the code replays its log."""

    run_id: str
    workflow_name: str
    status: str
    error: Exception | None = None


async def check_runs(world: World, runs: Sequence[RunRecord]) -> list[ReplayResult]:
    """Check each of `runs` (records as listed) and say how each went: an error of one
    run (NonDeterminismError, RegistrationError, a log that cannot be decoded, anything
    its replay raised) is that run's result. A failure of the world is raised."""
    results: list[ReplayResult] = []
    for start in range(0, len(runs), BATCH):
        for run in runs[start:start + BATCH]:
            try:
                replay_log(run, await world.list_events(run.run_id))
            except WorldError as exc:
                if not isinstance(exc, CorruptRecordError):
                    raise  # the world failed, not this run: stop the check
                results.append(ReplayResult(run.run_id, run.workflow_name, run.status, exc))
            except Exception as exc:  # NonDeterminismError, RegistrationError, a bug
                results.append(ReplayResult(run.run_id, run.workflow_name, run.status, exc))
            else:
                results.append(ReplayResult(run.run_id, run.workflow_name, run.status))
        await asyncio.sleep(0)  # a long check leaves the loop to others between batches
    return results


class _ReplayOnly:
    """What a `RunActor` reads of its engine when it only replays."""

    def __init__(self, world: World | None) -> None:
        self.world = world


def replay_log(run: RunRecord, events: Sequence[EventRecord]) -> None:
    """Replay `events` (run `run`'s log) against the workflow code registered now;
    `NonDeterminismError` where they disagree. Must be called on a running event loop
    (the workflow's tasks live on a loop of their own, driven from here)."""
    if run.corrupt is not None:
        raise CorruptRecordError(f"run {run.run_id}: {run.corrupt}", run.run_id)
    defn = get_workflow(run.workflow_name)
    if defn is None:
        raise RegistrationError(
            f"run {run.run_id} is a run of workflow {run.workflow_name!r}, which is not "
            f"registered in this process: import the module that defines it")
    events = list(events)
    started = next((e for e in events if isinstance(e.event, RunStarted)), None)
    try:
        args, kwargs = defn.codec.decode(run.input)
    except Exception as exc:
        raise CorruptRecordError(f"run {run.run_id}: its stored input cannot be decoded: "
                                 f"{type(exc).__name__}: {exc}", run.run_id) from None
    instance = new_instance(defn, run, events,
                            started.created_at if started is not None else run.created_at,
                            args, kwargs)
    # the actor's own matching of log against code, on an actor that never runs
    actor = RunActor(cast("Engine", _ReplayOnly(None)), run.run_id)
    actor._instance = instance
    try:
        instance.start()
        actor._replay(events)
        end = next((e for e in events if isinstance(e.event, TERMINAL_EVENTS)), None)
        if end is not None and isinstance(end.event, RunCompleted):
            _check_completion(instance, end, actor)
    finally:
        if not instance.done:
            instance.discard()
        actor.ended.cancel()


def _check_completion(instance: WorkflowInstance, end: EventRecord, actor: RunActor) -> None:
    """A run that completed must complete under the code too, after the same calls."""
    assert instance.root is not None
    found: str | None = None
    position = "end"
    if not instance.done:
        waiting = [c for c in instance.take_new_calls() if c.cid not in actor._recorded
                   and not (isinstance(c, TimerCall) and c.handle._cancelled)]
        if waiting:
            position = waiting[0].cid
            found = f"{_describe_call(waiting[0])} at position {position}"
        else:
            found = "a wait for input the log does not hold"
    elif instance.root.cancelled():
        found = "a cancellation"
    elif (error := instance.root.exception()) is not None:
        found = f"an error: {type(error).__name__}: {error}"
    if found is None:
        return
    expected = f"the run's end (run_completed at seq {end.seq})"
    raise NonDeterminismError(
        f"workflow {instance.defn.name!r} (run {instance.run_id}): the log records "
        f"{expected}, but the code now has {found}; the code changed under the run",
        workflow=instance.defn.name, run_id=instance.run_id, position=position,
        expected=expected, found=found)


def _describe_call(call: Any) -> str:
    step = getattr(call, "step", None)
    return f"step {step.name!r}" if step is not None else f"a {call.kind}"
