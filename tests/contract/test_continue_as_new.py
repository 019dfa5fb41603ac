"""Continue-as-new: a run ends `continued` and a fresh run of the chain goes on."""

from __future__ import annotations

from typing import Any

from worldflow import continue_as_new, get_workflow_metadata, start, step, workflow


@step(name="n_add")
async def add(total: int, n: int) -> int:
    return total + n


@workflow(name="n_counter")
async def counter(i: int, total: int, until: int) -> dict[str, Any]:
    total = await add(total, i)
    if i < until:
        continue_as_new(i + 1, total, until)
    meta = get_workflow_metadata()
    return {"total": total, "run": meta.run_id, "from": meta.continued_from}


@workflow(name="n_parent")
async def parent_of_chain() -> int:
    return (await counter(1, 0, 3))["total"]


async def test_a_chain_of_runs_follows_to_the_final_result(world: Any) -> None:
    run = await start(counter, 1, 0, 5, world=world, run_id=f"chain-{world.name}")
    result = await run.result(timeout=60)
    assert result == {"total": 15, "run": f"chain-{world.name}~c4",
                      "from": f"chain-{world.name}~c3"}
    first = await world.get_run(run.run_id)
    assert first.status == "continued"
    # each run of the chain has a fresh, short log: replay cost does not grow
    lengths = []
    for run_id in [run.run_id] + [f"chain-{world.name}~c{n}" for n in range(1, 5)]:
        events = await world.list_events(run_id)
        lengths.append(len(events))
        assert events[0].event_type == "run_created"
    assert lengths[:-1] == [lengths[0]] * 4
    assert [e.event_type for e in await world.list_events(run.run_id)][-1] == "run_continued"


async def test_a_child_that_continues_as_new_gives_its_parent_the_final_result(
        world: Any) -> None:
    run = await start(parent_of_chain, world=world)
    assert await run.result(timeout=60) == 6


def test_a_user_run_id_cannot_look_like_a_chains_next_run() -> None:
    from worldflow.core.api import _RUN_ID
    from worldflow.core.continuation import next_run_id, previous_run_id

    assert next_run_id("nightly.c1") == "nightly.c1~c1"   # a user's ".c1" is not a chain
    assert previous_run_id("nightly.c1") is None
    assert previous_run_id(next_run_id(next_run_id("x"))) == "x~c1"
    assert _RUN_ID.match("x~c1") is None  # start(run_id=...) refuses the chain's form
