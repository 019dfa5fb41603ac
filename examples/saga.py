"""A saga: book a flight, a hotel and a car; undo what was booked if the trip is
cancelled (or a booking fails) midway, in reverse order.

    python examples/saga.py                   # cancel while the car booking waits
    python examples/saga.py --fail            # the car booking fails instead
    WORKFLOW_TARGET_WORLD=memory python examples/saga.py

Patterns shown:
- `run.cancel()` raises `asyncio.CancelledError` inside the workflow at its current
  await; the `except` block awaits compensation steps, which run and are recorded like
  any step; re-raising ends the run `cancelled`
- a failing step (`FatalError`) goes through the same compensations, and the run fails
- the step that was running when the cancel came is cancelled and not retried
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from typing import Any

from worldflow import (
    FatalError,
    RunCancelledError,
    create_world,
    get_step_metadata,
    start,
    step,
    workflow,
)

#: what the steps did, in order (for the printout and the tests)
HAPPENED: list[str] = []
#: set while the car booking waits (this example runs its steps in-process)
CAR_WAITING: dict[str, asyncio.Event] = {}


def _say(line: str) -> None:
    HAPPENED.append(line)
    print(f"  {line}")


@step
async def book_flight(trip: dict[str, Any]) -> str:
    _say(f"booked flight to {trip['to']}")
    return f"FL-{get_step_metadata().step_id[-6:]}"


@step
async def book_hotel(trip: dict[str, Any]) -> str:
    _say(f"booked hotel in {trip['to']} for {trip['nights']} nights")
    return f"HO-{get_step_metadata().step_id[-6:]}"


@step(max_retries=0)
async def book_car(trip: dict[str, Any]) -> str:
    if trip.get("fail"):
        _say("car booking failed: no cars left")
        raise FatalError("no cars left")
    _say("car booking: waiting for the rental company...")
    CAR_WAITING.setdefault(trip["id"], asyncio.Event()).set()
    try:
        await asyncio.sleep(trip.get("car_wait", 30))
    except asyncio.CancelledError:
        _say("car booking: stopped (the trip was cancelled)")
        raise
    _say("booked car")
    return "CAR-1"


@step
async def cancel_flight(confirmation: str) -> None:
    _say(f"cancelled flight {confirmation}")


@step
async def cancel_hotel(confirmation: str) -> None:
    _say(f"cancelled hotel {confirmation}")


@step
async def cancel_car(confirmation: str) -> None:
    _say(f"cancelled car {confirmation}")


UNDO = {"flight": cancel_flight, "hotel": cancel_hotel, "car": cancel_car}


@workflow(name="saga_book_trip")
async def book_trip(trip: dict[str, Any]) -> dict[str, str]:
    booked: list[tuple[str, str]] = []
    try:
        booked.append(("flight", await book_flight(trip)))
        booked.append(("hotel", await book_hotel(trip)))
        booked.append(("car", await book_car(trip)))
    except (asyncio.CancelledError, Exception):
        for kind, confirmation in reversed(booked):  # compensate in reverse order
            await UNDO[kind](confirmation)
        raise
    return dict(booked)


async def run_saga(world: Any, *, fail: bool = False, car_wait: float = 30) -> str:
    """Start a trip, cancel it once the hotel is booked (unless the car booking fails
    first); return how the run ended."""
    trip_id = f"trip-{uuid.uuid4().hex[:8]}"
    trip = {"id": trip_id, "to": "Lisbon", "nights": 3, "fail": fail, "car_wait": car_wait}
    run = await start(book_trip, trip, world=world, run_id=trip_id)
    if not fail:
        await CAR_WAITING.setdefault(trip_id, asyncio.Event()).wait()
        print(f"  -> cancelling run {run.run_id}")
        await run.cancel()
    try:
        await run.result(timeout=60)
    except RunCancelledError:
        pass
    except FatalError as exc:
        print(f"  -> the run failed: {exc}")
    status = await run.status()
    print(f"run {run.run_id}: {status.value}")
    for s in await run.steps():
        print(f"  step {s.correlation_id:>2} {s.step_name:<14} {s.status.value}")
    return status.value


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fail", action="store_true", help="the car booking fails")
    args = parser.parse_args()
    async with create_world() as world:
        await run_saga(world, fail=args.fail)


if __name__ == "__main__":
    asyncio.run(main())
