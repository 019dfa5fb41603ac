"""Named queues' slots on Postgres: the memory world's algorithm, serialised per queue
by a transaction-scoped advisory lock, and the world's slot operations that run it
(`QueueSlots`, composed into PostgresWorld)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from worldflow.worlds.postgres import sql
from worldflow.worlds.postgres.connections import PostgresConnections
from worldflow.worlds.postgres.messages import SlotReleased

if TYPE_CHECKING:
    from collections.abc import Callable

    import asyncpg

__all__ = ["QueueSlots", "acquire_slot"]

#: seconds a waiter behind another one (or a full queue) waits before asking again
SLOT_RETRY = 0.05


async def acquire_slot(c: asyncpg.Connection, queue: str, holder: str,
                       concurrency: int | None, rate_limit: tuple[int, float] | None,
                       priority: int, lease_seconds: float,
                       clock: Callable[[], dt.datetime]) -> float | None:
    await c.execute(sql.LOCK_QUEUE, queue)
    # the time is read only once the queue's lock is held: a grant stamped with a time
    # from before a wait for the lock would leave the rate window too early
    now = clock()
    expires = now + dt.timedelta(seconds=lease_seconds)
    await c.execute(sql.DELETE_EXPIRED_SLOTS, queue, now)
    if await c.fetchval(sql.HAS_SLOT, queue, holder) is not None:
        return None
    await c.execute(sql.DELETE_EXPIRED_WAITERS, queue, now)
    await c.execute(sql.UPSERT_WAITER, queue, holder, priority, now, expires)
    if await c.fetchval(sql.FIRST_WAITER, queue) != holder:
        return SLOT_RETRY
    if concurrency is not None and await c.fetchval(sql.COUNT_SLOTS, queue) >= concurrency:
        return SLOT_RETRY
    if rate_limit is not None:
        count, period = rate_limit
        window_start = now - dt.timedelta(seconds=period)
        await c.execute(sql.DELETE_OLD_GRANTS, queue, window_start)
        if await c.fetchval(sql.COUNT_GRANTS, queue) >= count:
            nth = await c.fetchval(sql.NTH_GRANT, queue, count - 1)
            return float(max(0.001, (nth - window_start).total_seconds()))
    await c.execute(sql.INSERT_SLOT, queue, holder, expires)
    await c.execute(sql.INSERT_GRANT, queue, now)
    await c.execute(sql.DELETE_WAITER, queue, holder)
    return None


class QueueSlots(PostgresConnections):
    """The World's slot operations: each runs `acquire_slot` (the function above) or
    its release in one transaction, and a release wakes the queue's waiters."""

    async def acquire_slot(self, queue: str, holder: str, *, concurrency: int | None,
                           rate_limit: tuple[int, float] | None, priority: int,
                           lease_seconds: float) -> float | None:
        key = self._queue_key(queue)
        return await self._run(lambda c: acquire_slot(c, key, holder, concurrency, rate_limit,
                                                      priority, lease_seconds, self.now),
                               transaction=True)

    async def release_slot(self, queue: str, holder: str) -> None:
        key = self._queue_key(queue)

        async def release(c: asyncpg.Connection) -> None:
            await c.execute(sql.DELETE_SLOT, key, holder)
            await c.execute(sql.DELETE_WAITER, key, holder)
            await self._notify(c, SlotReleased(queue))

        await self._run(release, transaction=True)
        self.notify_slot(queue)

    async def renew_slots(self, holder_prefix: str, lease_seconds: float) -> None:
        expires = self.now() + dt.timedelta(seconds=lease_seconds)
        await self._run(lambda c: c.execute(sql.RENEW_SLOTS, expires, holder_prefix,
                                            self.job_prefix + "/"))
