"""examples/saga.py: compensations run in reverse order when a trip is cancelled midway
or a booking fails."""

from __future__ import annotations

from typing import Any

from examples import saga


async def test_cancelled_trip_undoes_its_bookings_in_reverse_order(memory_world: Any) -> None:
    saga.HAPPENED.clear()
    assert await saga.run_saga(memory_world) == "cancelled"
    assert saga.HAPPENED[:3] == ["booked flight to Lisbon", "booked hotel in Lisbon for 3 nights",
                                 "car booking: waiting for the rental company..."]
    assert saga.HAPPENED[3] == "car booking: stopped (the trip was cancelled)"
    assert [line.split()[1] for line in saga.HAPPENED[4:]] == ["hotel", "flight"]


async def test_failed_booking_undoes_the_others_and_fails_the_run(memory_world: Any) -> None:
    saga.HAPPENED.clear()
    assert await saga.run_saga(memory_world, fail=True) == "failed"
    assert [line.split()[1] for line in saga.HAPPENED[3:]] == ["hotel", "flight"]
    assert "booked car" not in saga.HAPPENED
