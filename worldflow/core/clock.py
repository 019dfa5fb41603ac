"""The world's time: a clock, and timers that call back at a time on that clock.

`Timers` is what every wait of the engine goes through (see its docstring); the
`SystemTimers` of a world with no test clock wait in real time on the running loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemTimers", "TimerHandle", "Timers", "system_clock"]

Clock = Callable[[], dt.datetime]


def system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


#: system_clock, as one C call
_fast_system_clock: Clock = functools.partial(dt.datetime.now, dt.UTC)


class TimerHandle(Protocol):
    """A scheduled callback; `cancel()` makes sure it does not run (idempotent)."""

    def cancel(self) -> None: ...


@runtime_checkable
class Timers(Protocol):
    """The world's time: what it is, and callbacks at a time on the same clock.

    Every wait of the engine on the world's time (a sleep's timer, a retry backoff, a
    workflow's deadline, the next queue wake-up) is a `call_at` here, so a test clock
    that moves time by itself (`worldflow.testing`) fires them all, in order, without
    real waiting. Callbacks run on the event loop's thread, never inside `call_at`."""

    def now(self) -> dt.datetime: ...

    def call_at(self, when: dt.datetime, callback: Callable[..., object],
                *args: object) -> TimerHandle: ...


class SystemTimers:
    """`Timers` on a clock function, waiting in real time with the running loop."""

    def __init__(self, clock: Clock = system_clock) -> None:
        #: the clock function (`now()` calls it; a world reads it directly)
        self.clock = _fast_system_clock if clock is system_clock else clock

    def now(self) -> dt.datetime:
        return self.clock()

    def call_at(self, when: dt.datetime, callback: Callable[..., object],
                *args: object) -> TimerHandle:
        delay = (when - self.clock()).total_seconds()
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback, *args)
