"""The data-processing workflow: fetch, validate, process in parallel, aggregate.

    python examples/data_processing.py                      # the SQLite world (.worldflow/)
    WORKFLOW_TARGET_WORLD=memory python examples/data_processing.py
    python examples/data_processing.py --limit 20 --run-id nightly-1   # idempotent by id

Patterns shown:
- a loop of steps (validate each item, publish in batches with a durable sleep between)
- parallel steps with `asyncio.gather`
- partial failure: `gather(..., return_exceptions=True)`; one item's step raises
  `FatalError` (no retry) and the workflow carries on with the rest
- a transient failure: `RetryableError` retries a step after a short delay
- a conditional branch: items over a threshold go to an extra review step

Each step body logs a line (logger "examples.data_processing") each time it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
from typing import Any

from worldflow import (
    FatalError,
    RetryableError,
    create_world,
    get_step_metadata,
    sleep,
    start,
    step,
    workflow,
)

logger = logging.getLogger("examples.data_processing")

#: items whose amount is over this go through `review_item`
REVIEW_THRESHOLD = 500
#: item ids the (pretend) enrichment service has no data for: their step fails for good
UNKNOWN_IDS = {7}
#: item ids whose first processing attempt hits a (pretend) busy service
FLAKY_IDS = {3}
BATCH_SIZE = 4
#: the pause between batches, and before retrying a busy service
PAUSE = "100ms"


@step
async def fetch_items(limit: int) -> list[dict[str, Any]]:
    """Read `limit` records from the source (here: made up, always the same)."""
    logger.info("fetch_items %d", limit)
    return [{"id": i, "name": f" Item {i} ", "amount": (i * 137) % 1000}
            for i in range(1, limit + 1)]


@step
async def validate_item(item: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise one record; a record that can never be valid is fatal."""
    logger.info("validate_item %d", item["id"])
    if not isinstance(item.get("amount"), int) or item["amount"] < 0:
        raise FatalError(f"item {item['id']}: amount must be a non-negative integer")
    return {**item, "name": item["name"].strip().lower()}


@step(max_retries=3, backoff="200ms")
async def process_item(item: dict[str, Any]) -> dict[str, Any]:
    """Enrich one record. Fails for good on unknown items; retries when the service is busy."""
    attempt = get_step_metadata().attempt
    logger.info("process_item %d attempt %d", item["id"], attempt)
    if item["id"] in UNKNOWN_IDS:
        raise FatalError(f"no enrichment data for item {item['id']}")
    if item["id"] in FLAKY_IDS and attempt == 1:
        raise RetryableError("enrichment service busy", retry_after=PAUSE)
    await asyncio.sleep(0.01)  # the call to the service
    return {"id": item["id"], "name": item["name"], "amount": item["amount"],
            "score": item["amount"] // 10}


@step
async def review_item(item: dict[str, Any]) -> dict[str, Any]:
    """The extra check for large amounts."""
    logger.info("review_item %d", item["id"])
    return {**item, "reviewed": True}


@step
async def publish_batch(items: list[dict[str, Any]]) -> int:
    """Write one batch to the sink. The step id is stable across retries, so the sink
    can use it to drop a duplicate write."""
    idempotency_key = get_step_metadata().step_id
    logger.info("publish_batch %s %s", [i["id"] for i in items], idempotency_key)
    return len(items)


@step
async def aggregate(items: list[dict[str, Any]], failed: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum up the run."""
    logger.info("aggregate %d", len(items))
    return {
        "processed": len(items),
        "failed": failed,
        "reviewed": [i["id"] for i in items if i.get("reviewed")],
        "total_amount": sum(i["amount"] for i in items),
        "total_score": sum(i["score"] for i in items),
    }


@workflow
async def data_processing(limit: int = 10, threshold: int = REVIEW_THRESHOLD) -> dict[str, Any]:
    items = await fetch_items(limit)

    # a loop of steps: each validation is recorded, so a restart resumes mid-loop
    valid = [await validate_item(item) for item in items]

    # parallel steps; return_exceptions=True: one item failing does not stop the others
    outcomes = await asyncio.gather(*(process_item(item) for item in valid),
                                    return_exceptions=True)
    processed: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for item, outcome in zip(valid, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            failed.append({"id": item["id"], "error": str(outcome)})
        else:
            processed.append(outcome)

    # a conditional branch: only large amounts get the extra review step
    checked = []
    for item in processed:
        if item["amount"] > threshold:
            item = await review_item(item)
        checked.append(item)

    # publish in batches, pausing durably between them (the sink is rate limited)
    for start_index in range(0, len(checked), BATCH_SIZE):
        if start_index:
            await sleep(PAUSE)
        await publish_batch(checked[start_index:start_index + BATCH_SIZE])

    return {"fetched": len(items), **await aggregate(checked, failed)}


async def main(limit: int, run_id: str | None) -> dict[str, Any]:
    async with create_world() as world:  # WORKFLOW_TARGET_WORLD; default sqlite
        run = await start(data_processing, limit, world=world, run_id=run_id)
        print(f"run id: {run.run_id}")
        result = await run.result(timeout=60)
        print(f"status: {await run.status()}")
        print("result: " + json.dumps(result, sort_keys=True))
        print("steps:")
        steps: collections.Counter[tuple[str, str]] = collections.Counter()
        attempts: collections.Counter[tuple[str, str]] = collections.Counter()
        for record in await run.steps():
            steps[record.step_name, record.status.value] += 1
            attempts[record.step_name, record.status.value] += record.attempt
        for (name, status), count in sorted(steps.items()):
            print(f"  {name:<14} {status:<10} steps={count:<3} attempts={attempts[name, status]}")
        return dict(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10, help="items to fetch (default 10)")
    parser.add_argument("--run-id", help="a run id; starting it again returns the same run")
    args = parser.parse_args()
    asyncio.run(main(args.limit, args.run_id))
