"""Checked by `mypy --strict` (tests/typing/test_types.py), never run: what the public
API's types promise. `start()` gives `Run[T]` with `T` the workflow's return type."""

from __future__ import annotations

from typing import Any, assert_type

import msgspec

import worldflow
from worldflow import Run, get_run, retry_run, start, step, workflow


class Order(msgspec.Struct):
    id: str
    qty: int


@step
async def price(qty: int) -> float:
    return qty * 2.5


@workflow
async def total(order: Order) -> float:
    return await price(order.qty)


@workflow(name="labels", timeout="1h")
async def labels(count: int, *, prefix: str = "l") -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


@workflow
async def nothing() -> None:
    await worldflow.sleep("1s")


async def typed_runs() -> None:
    run = await start(total, Order("o1", 2))
    assert_type(run, Run[float])
    assert_type(await run.result(), float)
    assert_type(await run.result(timeout=5), float)

    many = await start(labels, 3, prefix="x", run_id="labels-1")
    assert_type(await many.result(), list[str])

    empty = await start(nothing)
    assert_type(await empty.result(), None)

    found = await get_run("labels-1")
    assert_type(found, Run[Any])
    assert_type(await retry_run("labels-1"), Run[Any])

    # the decorated function keeps its signature for direct calls
    assert_type(await total(Order("o2", 1)), float)
    assert_type(await labels(2, prefix="y"), list[str])


async def typed_listing() -> None:
    run = await start(total, Order("o2", 1), tags={"customer": "42"})
    assert_type(run, Run[float])
    async for record in worldflow.list_runs(total, tags={"customer": "42"}, limit=10):
        assert_type(record.tags, dict[str, str])
        assert_type(record.steps_completed, int)
