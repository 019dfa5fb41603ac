"""The run queue on Postgres: claims, leases, releases and the next wake-up.

A claim takes rows `FOR UPDATE SKIP LOCKED` and stamps them with a lease, so many
processes claim from one table without waiting on each other. Separate from the run
log because these rows are the jobs (who holds a run, and until when), not the runs'
history.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from worldflow.worlds.postgres import sql
from worldflow.worlds.postgres.connections import PostgresConnections
from worldflow.worlds.postgres.messages import WorkAvailable

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    import asyncpg

__all__ = ["RunQueue"]


class RunQueue(PostgresConnections):
    """Claim runs under a lease, renew, release and expire leases."""

    async def claim_runs(self, owner: str, limit: int, lease_seconds: float, *,
                         workflows: Collection[str] | None = None) -> list[str]:
        if limit <= 0:
            return []
        now = self.now()
        expires = now + dt.timedelta(seconds=lease_seconds)
        prefix = self.job_prefix
        names = None if workflows is None else sorted(workflows)

        async def claim(c: asyncpg.Connection) -> list[str]:
            if names is None:
                if not await c.fetchval(sql.ANY_CLAIMABLE, prefix, now):
                    return []
                rows = await c.fetch(sql.CLAIM_READY, prefix, now, limit, owner, expires)
                if len(rows) < limit:
                    rows += await c.fetch(sql.CLAIM_EXPIRED, prefix, now,
                                          limit - len(rows), owner, expires)
                return [r[0] for r in rows]
            if not await c.fetchval(sql.ANY_CLAIMABLE_OF, prefix, now, names):
                return []
            rows = await c.fetch(sql.CLAIM_READY_OF, prefix, now, limit, owner, expires,
                                 names)
            if len(rows) < limit:
                rows += await c.fetch(sql.CLAIM_CANCEL_PENDING, prefix, now,
                                      limit - len(rows), owner, expires)
            if len(rows) < limit:
                rows += await c.fetch(sql.CLAIM_EXPIRED_OF, prefix, now, limit - len(rows),
                                      owner, expires, names)
            return [r[0] for r in rows]

        return await self._run(claim, transaction=True)

    async def renew_leases(self, owner: str, lease_seconds: float) -> set[str]:
        expires = self.now() + dt.timedelta(seconds=lease_seconds)
        rows = await self._run(lambda c: c.fetch(sql.RENEW_LEASES, self.job_prefix, owner,
                                                 expires))
        return {r[0] for r in rows}

    async def release_run(self, run_id: str, owner: str, wake_at: dt.datetime | None, *,
                          backoff: bool = False) -> None:
        now = self.now()

        async def release(c: asyncpg.Connection) -> None:
            await c.execute(sql.LOCK_JOB, run_id)
            available = await c.fetchval(sql.RELEASE_JOB, run_id, now, wake_at, owner,
                                         backoff)
            if available is not None and available <= now:
                await self._notify(c, WorkAvailable())

        await self._run(release, transaction=True)
        self.notify_work()

    async def expire_leases(self, owners: Sequence[str]) -> int:
        if not owners:
            return 0
        status = await self._run(lambda c: c.execute(sql.EXPIRE_LEASES, self.job_prefix,
                                                     self.now(), list(owners)))
        count = int(status.split()[-1])
        if count:
            self.notify_work()
        return count

    async def lease_owners(self) -> list[str]:
        rows = await self._run(lambda c: c.fetch(sql.LEASE_OWNERS, self.job_prefix))
        return [r[0] for r in rows]

    async def next_wake_at(self, *, workflows: Collection[str] | None = None
                           ) -> dt.datetime | None:
        names = None if workflows is None else sorted(workflows)
        value: dt.datetime | None = await self._run(
            lambda c: c.fetchval(sql.NEXT_WAKE, self.job_prefix) if names is None
            else c.fetchval(sql.NEXT_WAKE_OF, self.job_prefix, names))
        return value
