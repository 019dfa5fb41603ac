"""Test workflows that wait for days, in milliseconds.

`testing_world()` is a started memory world on a virtual clock: time stands still while
anything runs, and jumps to the next deadline (a sleep's end, a retry backoff, a
workflow's timeout, a run's wake-up) as soon as every live run waits only on time: no
step attempt runs, no actor has input to handle, no run has an open hook. A workflow
that sleeps ``"30d"`` and retries with one-minute backoffs ends in milliseconds, and
the log shows the durable times as if they had passed. `await world.advance("1h")`
moves time by hand (with `auto_skip=False`, only that moves it).

Installed with worldflow, this module is also a pytest plugin (entry point
``pytest11``): the fixture `wf_world` is such a world, the default world of the test
(`start()` and `get_run()` use it without `world=`), closed after the test::

    async def test_reminder_is_sent_after_thirty_days(wf_world):
        run = await worldflow.start(remind, "ada")
        assert await run.result() == "reminded ada"
        assert wf_world.now() - wf_world.started_at >= dt.timedelta(days=30)

Virtual time drives only the world's timers: a step that waits in real time (for a
server, or with `asyncio.sleep`) holds the clock until it ends, and a step's own
`timeout=` is measured in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import inspect
import itertools
from typing import TYPE_CHECKING, Any

from worldflow.core.durations import parse_duration
from worldflow.core.runtime import default_world, set_default_world
from worldflow.worlds.memory import MemoryWorld

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = ["TestingWorld", "VirtualTimers", "testing_world"]

#: loop iterations with nothing ready before the system counts as idle
_QUIET_ITERATIONS = 3
#: real seconds between looks while something waits outside worldflow's time
_POLL = 0.001


class _VirtualTimer:
    __slots__ = ("args", "callback", "cancelled", "seq", "when")

    def __init__(self, when: dt.datetime, seq: int, callback: Callable[..., object],
                 args: tuple[object, ...]) -> None:
        self.when = when
        self.seq = seq
        self.callback = callback
        self.args = args
        self.cancelled = False

    def __lt__(self, other: _VirtualTimer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        self.cancelled = True


class VirtualTimers:
    """A clock that moves only when told (`move_to`), and the timers on it.

    Timers fire in order of their time, then of their scheduling, each on the event
    loop (`call_soon`) as time passes it, never while it is scheduled."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime.now(dt.UTC)
        self._heap: list[_VirtualTimer] = []
        self._seq = itertools.count()

    def now(self) -> dt.datetime:
        return self._now

    def call_at(self, when: dt.datetime, callback: Callable[..., object],
                *args: object) -> _VirtualTimer:
        timer = _VirtualTimer(when, next(self._seq), callback, args)
        heapq.heappush(self._heap, timer)
        return timer

    def next_deadline(self) -> dt.datetime | None:
        """The time of the earliest pending timer (None: none is pending)."""
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].when if self._heap else None

    def move_to(self, when: dt.datetime) -> None:
        """Set the time to `when` (never backwards) and fire the timers it passed."""
        self._now = max(self._now, when)
        loop = asyncio.get_running_loop()
        while self._heap and self._heap[0].when <= self._now:
            timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                timer.cancelled = True
                loop.call_soon(timer.callback, *timer.args)


class TestingWorld(MemoryWorld):
    """A memory world on `VirtualTimers` that skips time when all runs wait on it."""

    __test__ = False  # not a test class, despite its name
    name = "memory"

    def __init__(self, *, auto_skip: bool = True, start_at: dt.datetime | None = None,
                 **options: Any) -> None:
        self.virtual = VirtualTimers(start_at)
        super().__init__(clock=self.virtual, **options)
        #: jump to the next deadline by itself whenever all runs wait only on time
        self.auto_skip = auto_skip
        #: the virtual time when the world was made
        self.started_at = self.virtual.now()
        self._skipper: asyncio.Task[None] | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []

    async def start(self) -> None:
        await super().start()
        if self._skipper is None:
            self._skipper = asyncio.create_task(self._skip_time(),
                                                name="worldflow testing clock")

    async def close(self) -> None:
        skipper, self._skipper = self._skipper, None
        if skipper is not None:
            skipper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await skipper
        await super().close()

    async def advance(self, duration: Any) -> None:
        """Move time forward by `duration` ("90s", "1h", "2d", seconds, a timedelta),
        deadline by deadline, letting the runs react to each before the next."""
        target = self.now() + dt.timedelta(seconds=parse_duration(duration,
                                                                  what="advance duration"))
        await self.settle()
        while (when := self.virtual.next_deadline()) is not None and when <= target:
            self._move_to(when)
            await self.settle()
        self._move_to(target)
        await self.settle()

    async def settle(self) -> None:
        """Return once nothing is left to do but wait: no callback is ready on the loop,
        no step attempt runs, no actor has input to handle, no run is due."""
        if self._skipper is None:
            raise RuntimeError("settle() and advance() need a started testing world")
        # only the skipper watches the loop: two watchers would each keep it busy
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        await waiter

    async def _quiesce(self) -> None:
        quiet = 0
        while quiet < _QUIET_ITERATIONS:
            await asyncio.sleep(0)
            if _loop_has_ready_callbacks():
                quiet = 0
            elif self._runs_busy():
                quiet = 0
                await asyncio.sleep(_POLL)  # a step waits in real time: let it
            else:
                quiet += 1

    def _runs_busy(self) -> bool:
        engine = self.engine
        if engine is None:
            return False
        if engine.parked:  # actors waiting for a queue slot
            return True
        if any(actor.busy for actor in engine.actors.values()):
            return True
        now = self.now()
        return any(job.lease_owner is None and job.available_at is not None
                   and job.available_at <= now for job in self._jobs.values())

    def _waits_only_on_time(self) -> bool:
        return not any(hook.status == "active" for hook in self._hooks.values())

    def _move_to(self, when: dt.datetime) -> None:
        self.virtual.move_to(when)
        # the heartbeat runs in real time: renew leases here, or a jump expires them
        engine = self.engine
        if engine is not None:
            expires = self.now() + dt.timedelta(seconds=self.lease_seconds)
            for job in self._jobs.values():
                if job.lease_owner == engine.worker_id:
                    job.lease_expires_at = expires

    async def _skip_time(self) -> None:
        while True:
            await self._quiesce()
            if self._idle_waiters:  # they act first (e.g. advance() moves time)
                waiters, self._idle_waiters = self._idle_waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                continue
            if self.auto_skip and self._waits_only_on_time():
                when = self.virtual.next_deadline()
                if when is not None:
                    self._move_to(when)
                    continue
            await asyncio.sleep(_POLL)  # nothing to skip to: look again soon


def _loop_has_ready_callbacks() -> bool:
    # asyncio's loop keeps them in `_ready`; a loop without it (uvloop) counts quiet
    # iterations only
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    return bool(ready)


@contextlib.asynccontextmanager
async def testing_world(*, auto_skip: bool = True, start_at: dt.datetime | None = None,
                        **options: Any) -> AsyncIterator[TestingWorld]:
    """A started `TestingWorld`, the default world of the running loop until it closes."""
    world = TestingWorld(auto_skip=auto_skip, start_at=start_at, **options)
    previous = default_world()
    await world.start()
    set_default_world(world)
    try:
        yield world
    finally:
        await asyncio.shield(world.close())
        if previous is not None and previous is not world:
            set_default_world(previous)


testing_world.__test__ = False  # type: ignore[attr-defined]  # imported into test modules


try:
    import pytest
except ImportError:  # testing_world() works without pytest; the fixture needs it
    pass
else:
    def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
        """An `async def` test that uses `wf_world` runs without further set-up: unless
        an async plugin already claimed it (an `anyio` or `asyncio` mark), it is marked
        for anyio's pytest plugin (installed with worldflow) on asyncio."""
        for item in items:
            if (isinstance(item, pytest.Function)
                    and "wf_world" in getattr(item, "fixturenames", ())
                    and inspect.iscoroutinefunction(item.obj)
                    and item.get_closest_marker("anyio") is None
                    and item.get_closest_marker("asyncio") is None):
                item.add_marker(pytest.mark.anyio)

    @pytest.fixture
    async def wf_world() -> AsyncIterator[TestingWorld]:
        """A started memory world on a virtual clock that skips time whenever every
        run waits only on time; the default world of the test, closed after it."""
        async with testing_world() as world:
            yield world
