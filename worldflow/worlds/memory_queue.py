"""The memory world's queue: runs waiting to be claimed, their leases, and the slots of
named queues.

It is separate from worldflow.worlds.memory because it is the one part of that world
about who works on what and when (claims, leases, wake times, concurrency and rate
limits), not about what a run holds. `MemoryWorld` composes `MemoryQueue` and owns its
state: the dicts declared here are made in `MemoryWorld.__init__`, and the run log and
the inbox there set a job's availability as they change.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from worldflow.core.world import BaseWorld

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from worldflow.core.records import InboxRecord

__all__ = ["MemoryQueue"]


class _Job:
    __slots__ = ("available_at", "backoff", "cancel_pending", "created_at",
                 "lease_expires_at", "lease_owner", "workflow_name")

    def __init__(self, workflow_name: str, available_at: dt.datetime | None,
                 created_at: dt.datetime) -> None:
        self.workflow_name = workflow_name
        self.available_at = available_at
        self.created_at = created_at
        self.lease_owner: str | None = None
        self.lease_expires_at: dt.datetime | None = None
        #: released with backoff: only a cancel makes it available before available_at
        self.backoff = False
        #: a cancel waits in the inbox: any worker may claim it (no workflow code needed),
        #: unless one backed off from it (then only workers with its code, so a worker
        #: that cannot end it does not take it again and again)
        self.cancel_pending = False

    def claimable_by(self, workflows: Collection[str] | None) -> bool:
        return (workflows is None or self.workflow_name in workflows
                or (self.cancel_pending and not self.backoff))


class MemoryQueue(BaseWorld):
    """Claims, leases and queue slots of the memory world, over its jobs and slots."""

    _jobs: dict[str, _Job]
    #: read to wake a released run at once when input waits for it
    _inbox: dict[str, list[InboxRecord]]
    _slots: dict[str, dict[str, dt.datetime]]
    _slot_grants: dict[str, list[dt.datetime]]
    _slot_waiters: dict[str, dict[str, tuple[int, dt.datetime, dt.datetime]]]

    # -- queue ---------------------------------------------------------------------
    async def claim_runs(self, owner: str, limit: int, lease_seconds: float, *,
                         workflows: Collection[str] | None = None) -> list[str]:
        now = self.now()
        ready = [(job.available_at or now, job.created_at, run_id)
                 for run_id, job in self._jobs.items()
                 if ((job.lease_owner is None and job.available_at is not None
                      and job.available_at <= now)
                     or (job.lease_owner is not None and job.lease_expires_at is not None
                         and job.lease_expires_at <= now))
                 and job.claimable_by(workflows)]
        ready.sort()
        claimed = []
        for _, _, run_id in ready[:limit]:
            job = self._jobs[run_id]
            job.lease_owner = owner
            job.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
            job.backoff = False
            claimed.append(run_id)
        return claimed

    async def renew_leases(self, owner: str, lease_seconds: float) -> set[str]:
        now = self.now()
        held = set()
        for run_id, job in self._jobs.items():
            if job.lease_owner == owner:
                job.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
                held.add(run_id)
        return held

    async def release_run(self, run_id: str, owner: str, wake_at: dt.datetime | None, *,
                          backoff: bool = False) -> None:
        job = self._jobs.get(run_id)
        if job is None or job.lease_owner != owner:
            return
        job.lease_owner = None
        job.lease_expires_at = None
        job.backoff = backoff
        wake_now = job.cancel_pending if backoff else bool(self._inbox.get(run_id))
        job.available_at = self.now() if wake_now else wake_at
        if job.available_at is not None:
            self.notify_work()

    async def expire_leases(self, owners: Sequence[str]) -> int:
        dead = set(owners)
        count = 0
        now = self.now()
        for job in self._jobs.values():
            if job.lease_owner in dead:
                job.lease_owner = None
                job.lease_expires_at = None
                job.available_at = now
                count += 1
        if count:
            self.notify_work()
        return count

    async def lease_owners(self) -> list[str]:
        return sorted({j.lease_owner for j in self._jobs.values() if j.lease_owner is not None})

    async def next_wake_at(self, *, workflows: Collection[str] | None = None
                           ) -> dt.datetime | None:
        jobs = [j for j in self._jobs.values() if j.claimable_by(workflows)]
        times = [j.available_at for j in jobs
                 if j.lease_owner is None and j.available_at is not None]
        times += [j.lease_expires_at for j in jobs
                  if j.lease_owner is not None and j.lease_expires_at is not None]
        return min(times, default=None)

    # -- queue slots ---------------------------------------------------------------
    async def acquire_slot(self, queue: str, holder: str, *, concurrency: int | None,
                           rate_limit: tuple[int, float] | None, priority: int,
                           lease_seconds: float) -> float | None:
        now = self.now()
        lease = dt.timedelta(seconds=lease_seconds)
        slots = self._slots.setdefault(queue, {})
        for other, expires in list(slots.items()):
            if expires <= now:
                del slots[other]
        if holder in slots:
            return None
        waiters = self._slot_waiters.setdefault(queue, {})
        for other, (_, _, expires) in list(waiters.items()):
            if expires <= now:
                del waiters[other]
        since = waiters[holder][1] if holder in waiters else now
        waiters[holder] = (priority, since, now + lease)
        first = min(waiters, key=lambda h: (-waiters[h][0], waiters[h][1], h))
        if first != holder:
            return 0.05
        if concurrency is not None and len(slots) >= concurrency:
            return 0.05  # a release in this process wakes waiters sooner
        grants = self._slot_grants.setdefault(queue, [])
        if rate_limit is not None:
            count, period = rate_limit
            window_start = now - dt.timedelta(seconds=period)
            grants[:] = [g for g in grants if g > window_start]
            if len(grants) >= count:
                return max(0.001, (grants[-count] - window_start).total_seconds())
        slots[holder] = now + lease
        grants.append(now)
        del waiters[holder]
        return None

    async def release_slot(self, queue: str, holder: str) -> None:
        self._slots.get(queue, {}).pop(holder, None)
        self._slot_waiters.get(queue, {}).pop(holder, None)
        self.notify_slot(queue)

    async def renew_slots(self, holder_prefix: str, lease_seconds: float) -> None:
        expires = self.now() + dt.timedelta(seconds=lease_seconds)
        for slots in self._slots.values():
            for holder in slots:
                if holder.startswith(holder_prefix):
                    slots[holder] = expires
