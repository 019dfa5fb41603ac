"""`BaseWorld`: what every world shares, whatever its storage.

Lifecycle (`async with world:` / `open()` / `close()`), the engine that processes the
queue (started with the world in the running event loop), and in-process wake-ups
(work available, runs ended, inbox input, stream chunks, freed queue slots). A world
subclasses it and implements the storage half of the `World` protocol
(`worldflow.core.world`, which also exports this class).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Self, cast

from worldflow.core.clock import Clock, SystemTimers, Timers, system_clock
from worldflow.core.runtime import engine_for, start_engine, stop_engine

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable
    from types import TracebackType

    from worldflow.core.engine import Engine
    from worldflow.core.records import RunRecord
    from worldflow.core.world import World

__all__ = ["BaseWorld"]

logger = logging.getLogger("worldflow.world")


class BaseWorld:
    """What every world shares: lifecycle, the engine, in-process wake-ups."""

    name = "base"
    #: seconds between checks for a run's end made by another process
    finish_poll_interval: float = 1.0

    def __init__(self, *, queue_concurrency: int = 10, lease_seconds: float = 30.0,
                 keep_alive: float = 1.0, clock: Clock | Timers | None = None) -> None:
        if not isinstance(queue_concurrency, int) or queue_concurrency < 1:
            raise ValueError(f"queue_concurrency must be a positive integer, "
                             f"got {queue_concurrency!r}")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
        self.queue_concurrency = queue_concurrency
        self.lease_seconds = float(lease_seconds)
        #: a run whose next wake-up is further away than this many seconds is evicted
        self.keep_alive = float(keep_alive)
        #: the world's time and timers; `clock=` gives a clock function (timers then
        #: wait in real time) or a whole `Timers` (e.g. `worldflow.testing`'s)
        self.timers: Timers = (clock if isinstance(clock, Timers)
                               else SystemTimers(clock or system_clock))
        timers = self.timers
        # the clock function itself when there is one (a call less on every read)
        self._clock: Clock = (timers.clock if isinstance(timers, SystemTimers)
                              else timers.now)
        self._work_event = asyncio.Event()
        self._run_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._inbox_listener: Callable[[str], None] | None = None
        self._stream_events: dict[tuple[str, str], asyncio.Event] = {}
        self._slot_events: dict[str, asyncio.Event] = {}
        self._opened = False

    # -- lifecycle ---------------------------------------------------------------
    def now(self) -> dt.datetime:
        return self._clock()

    async def open(self) -> None:
        if not self._opened:
            await self._open()
            self._opened = True

    async def _open(self) -> None:
        """Connect and prepare the schema (world specific)."""

    async def _close(self) -> None:
        """Flush and disconnect (world specific)."""

    async def start(self) -> None:
        await self.open()
        await start_engine(self._as_world(), keep_alive=self.keep_alive)

    async def close(self) -> None:
        await stop_engine(self._as_world())
        if self._opened:
            self._opened = False
            await self._close()

    @property
    def engine(self) -> Engine | None:
        """The engine processing this world's queue in this process (after `start()`)."""
        return engine_for(self._as_world())

    def _as_world(self) -> World:
        # a BaseWorld subclass implements the storage half of the protocol
        return cast("World", self)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await asyncio.shield(self.close())

    # -- wake-ups ----------------------------------------------------------------
    def set_inbox_listener(self, listener: Callable[[str], None] | None) -> None:
        """`listener(run_id)` is called when outside input arrives for a run."""
        self._inbox_listener = listener

    def _signal_inbox(self, run_id: str) -> None:
        if self._inbox_listener is not None:
            self._inbox_listener(run_id)
        self.notify_work()

    def notify_work(self) -> None:
        self._work_event.set()

    async def wait_for_work(self, timeout: float) -> None:
        if not self._work_event.is_set():
            try:
                async with asyncio.timeout(timeout):
                    await self._work_event.wait()
            except TimeoutError:
                pass
        self._work_event.clear()

    def notify_stream(self, run_id: str, name: str) -> None:
        """Wake readers following stream `name` of `run_id` (new chunks or closed)."""
        event = self._stream_events.pop((run_id, name), None)
        if event is not None:
            event.set()

    async def wait_stream(self, run_id: str, name: str, timeout: float) -> None:
        """Return when the stream may have changed, or after `timeout` seconds."""
        event = self._stream_events.setdefault((run_id, name), asyncio.Event())
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass

    def notify_slot(self, queue: str) -> None:
        """Wake local waiters for a slot of `queue`."""
        event = self._slot_events.pop(queue, None)
        if event is not None:
            event.set()

    async def wait_slot(self, queue: str, timeout: float) -> None:
        event = self._slot_events.setdefault(queue, asyncio.Event())
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass

    def _watch_run_ends(self) -> None:
        """Someone waits for a run's end (its id is in `_run_waiters`). A world that
        learns of run ends committed by other processes by watching starts watching
        here, and wakes the waiters with `_signal_finished`."""

    def _signal_finished(self, run_id: str) -> None:
        for fut in self._run_waiters.pop(run_id, ()):
            if not fut.done():
                fut.set_result(None)

    async def wait_run_finished(self, run_id: str, timeout: float | None = None) -> RunRecord:
        from worldflow.errors import RunNotFoundError

        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            self._run_waiters.setdefault(run_id, []).append(fut)
            self._watch_run_ends()
            try:
                run = await self._as_world().get_run(run_id)
                if run is None:
                    raise RunNotFoundError(f"run not found: {run_id}")
                if run.status.is_terminal:
                    return run
                wait = self.finish_poll_interval
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                    if wait <= 0:
                        raise TimeoutError(f"run {run_id} did not finish within {timeout}s")
                try:
                    async with asyncio.timeout(wait):
                        await asyncio.shield(fut)
                except TimeoutError:
                    pass
            finally:
                waiters = self._run_waiters.get(run_id)
                if waiters is not None and fut in waiters:
                    waiters.remove(fut)
                    if not waiters:
                        del self._run_waiters[run_id]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


