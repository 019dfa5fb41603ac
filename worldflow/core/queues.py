"""Named queues: concurrency and rate limits that hold across every process of a world.

    emails = Queue("emails", concurrency=5, rate_limit=(10, "1s"))

    @step(queue=emails)            # or queue="emails" once the Queue is defined
    async def send_email(...): ...

    await start(report, world=world, queue=emails)   # at most 5 such runs live at once

A step on a queue runs its body only while it holds one of the queue's slots: at most
`concurrency` at once and at most `rate_limit[0]` starts in any window of
`rate_limit[1]`, counted by the world, so every process sharing it sees the same
limits. Waiters with a higher `priority` are served first, then the longest waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from worldflow.core.durations import parse_duration

if TYPE_CHECKING:
    from worldflow.core.world import World

__all__ = ["Queue", "get_queue", "hold_slot"]

_queues: dict[str, Queue] = {}
#: seconds between two asks for a slot (a slot released in this process wakes at once)
RETRY_INTERVAL = 0.05


@dataclasses.dataclass(frozen=True, slots=True)
class Queue:
    name: str
    concurrency: int | None = None
    rate_limit: tuple[int, float] | None = None
    priority: int = 0

    def __init__(self, name: str, *, concurrency: int | None = None,
                 rate_limit: tuple[int, Any] | None = None, priority: int = 0) -> None:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ValueError(f"queue name must be a non-empty string of at most 200 "
                             f"characters, got {name!r:.80}")
        if concurrency is not None and (not isinstance(concurrency, int)
                                        or isinstance(concurrency, bool) or concurrency < 1):
            raise ValueError(f"Queue {name!r}: concurrency must be a positive integer, "
                             f"got {concurrency!r}")
        rate: tuple[int, float] | None = None
        if rate_limit is not None:
            if not (isinstance(rate_limit, tuple | list) and len(rate_limit) == 2):
                raise ValueError(f"Queue {name!r}: rate_limit must be (count, period), "
                                 f"got {rate_limit!r}")
            count, period = rate_limit
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ValueError(f"Queue {name!r}: rate_limit count must be a positive "
                                 f"integer, got {count!r}")
            seconds = parse_duration(period, what=f"Queue {name!r}: rate_limit period")
            if seconds <= 0:
                raise ValueError(f"Queue {name!r}: rate_limit period must be positive")
            rate = (count, seconds)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ValueError(f"Queue {name!r}: priority must be an integer, got {priority!r}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "concurrency", concurrency)
        object.__setattr__(self, "rate_limit", rate)
        object.__setattr__(self, "priority", priority)
        existing = _queues.get(name)
        if existing is not None and existing != self:
            raise ValueError(f"queue {name!r} is already defined with other limits: "
                             f"{existing!r}")
        _queues[name] = self


def get_queue(queue: Queue | str) -> Queue:
    """The queue object for a name (a clear error for unknown names)."""
    if isinstance(queue, Queue):
        return queue
    found = _queues.get(queue) if isinstance(queue, str) else None
    if found is None:
        raise ValueError(f"unknown queue {queue!r}: define it first with "
                         f"Queue({queue!r}, concurrency=..., rate_limit=...)")
    return found


class hold_slot:
    """Wait for, hold, then release one slot of `queue` in `world`."""

    def __init__(self, world: World, queue: Queue, holder: str, priority: int | None = None,
                 lease_seconds: float = 30.0) -> None:
        self.world = world
        self.queue = queue
        self.holder = holder
        self.priority = queue.priority if priority is None else priority
        self.lease_seconds = lease_seconds

    async def acquire(self) -> float | None:
        return await self.world.acquire_slot(
            self.queue.name, self.holder, concurrency=self.queue.concurrency,
            rate_limit=self.queue.rate_limit, priority=self.priority,
            lease_seconds=self.lease_seconds)

    async def __aenter__(self) -> None:
        while True:
            wait = await self.acquire()
            if wait is None:
                return
            await self.world.wait_slot(self.queue.name, min(wait, RETRY_INTERVAL * 4)
                                       if wait > 0 else RETRY_INTERVAL)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.world.release_slot(self.queue.name, self.holder))
