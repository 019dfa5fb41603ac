"""Replay protection of `/flow` and `/step`: a signed delivery runs at most once.

A signed request stays valid for `signing.MAX_AGE` seconds either side of the server's
clock, so whoever captures one could send it again within that window. Every body
carries a `request_id` (see `worldflow.transports.messages`); `DeliveryLog` records the
answer given to each id, and the same id again gets the recorded answer (same status,
same body) without anything being run again. A duplicate that arrives while the first
delivery is still running waits for the first one's answer instead of running beside it.

The record lives in this process's memory, bounded and expiring: an entry is kept until
the request's signature has expired (at least `MAX_AGE` seconds after it arrived), and
at most `max_entries` answered entries are kept, the least recently used going first.
So:

- **Per process.** Behind a load balancer with several server processes, each one has
  its own record: a replay routed to another process runs again there. Route by the
  request id (or to one process) if that matters; the engine's own guarantees still
  hold (a step runs at least once; its completion is recorded exactly once).
- **Bounded.** Size `max_entries` for the deliveries one process answers within twice
  `MAX_AGE`; an answer dropped early for room can be replayed until it expires.
- **Not across restarts.** A restarted process has an empty record.

Recorded is every answer given after the request was verified and decoded, except 503
(nothing was done, and the same request may succeed later). If the delivery raises or
is cancelled, its entry is dropped and a duplicate waiting for it runs it instead.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["DEFAULT_MAX_ENTRIES", "Answer", "DeliveryLog", "RequestIdReusedError"]

DEFAULT_MAX_ENTRIES = 10_000
#: answers that are not recorded: nothing was done, so a repeat may do it
UNRECORDED_STATUSES = frozenset({503})


class Answer(msgspec.Struct, frozen=True):
    """An HTTP answer as recorded: replayed byte for byte."""

    status: int
    body: bytes
    media_type: str = "application/json"


class RequestIdReusedError(Exception):
    """A request id already seen with a different body (a sender bug, answered 409)."""


class _Entry:
    __slots__ = ("answer", "digest", "done", "expires_at", "waiters")

    def __init__(self, digest: bytes, expires_at: float) -> None:
        self.digest = digest
        self.expires_at = expires_at
        self.answer: Answer | None = None
        self.done = asyncio.Event()
        self.waiters = 0


class DeliveryLog:
    """The answers given to recent deliveries, by request id (see the module docstring).

    `clock` is monotonic seconds (tests pass their own).
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive number, got {max_entries!r}")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def waiters(self, kind: str, request_id: str) -> int:
        """How many duplicates of this delivery wait for its first answer."""
        entry = self._entries.get((kind, request_id))
        return 0 if entry is None else entry.waiters

    async def once(self, kind: str, request_id: str, digest: bytes, ttl: float,
                   deliver: Callable[[], Awaitable[Answer]]) -> Answer:
        """Run `deliver` for the first delivery of `request_id` (of endpoint `kind`) and
        record its answer for `ttl` seconds; a repeat gets that answer.

        `digest` identifies the body: the same id with another body raises
        `RequestIdReusedError`, and nothing runs.
        """
        key = (kind, request_id)
        while True:
            entry = self._entries.get(key)
            if entry is not None and entry.done.is_set() and entry.expires_at <= self._clock():
                del self._entries[key]
                entry = None
            if entry is None:
                break
            if not hmac.compare_digest(entry.digest, digest):
                raise RequestIdReusedError(
                    f"request id {request_id!r} was already used for another request; "
                    f"give every delivery a new id")
            self._entries.move_to_end(key)
            if entry.answer is None:
                entry.waiters += 1
                try:
                    await entry.done.wait()
                finally:
                    entry.waiters -= 1
            if entry.answer is not None:
                return entry.answer
            # the first delivery ended without an answer (it failed or was cancelled):
            # look again; the first duplicate to get here runs it

        entry = _Entry(digest, self._clock() + ttl)
        self._insert(key, entry)
        answer: Answer | None = None
        try:
            answer = await deliver()
            return answer
        finally:
            if answer is not None and answer.status not in UNRECORDED_STATUSES:
                entry.answer = answer
            elif self._entries.get(key) is entry:
                del self._entries[key]
            entry.done.set()

    def _insert(self, key: tuple[str, str], entry: _Entry) -> None:
        self._entries[key] = entry
        now = self._clock()
        # least recently used first: the front holds the oldest entries, so expired
        # ones are swept from there, and past `max_entries` the front goes
        running = 0
        while len(self._entries) > 1 and running < len(self._entries):
            old, front = next(iter(self._entries.items()))
            if not front.done.is_set():
                # still running: never dropped, so its duplicates still wait for it
                self._entries.move_to_end(old)
                running += 1
                continue
            if front.expires_at > now and len(self._entries) <= self.max_entries:
                break
            del self._entries[old]
