"""Published values: `set_event(key, value)` in a workflow, `get_event(run_id, key)`
anywhere.

A value is recorded in the run's log (`value_published`), so a replay publishes the
same values at the same points. Readers find it in the run's stream `$event:{key}`
(one chunk per value set, the last one wins), written by the run's actor after the
log; a stream write wakes waiting readers (across processes on Postgres by NOTIFY).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from worldflow.core.instance import current_instance
from worldflow.core.runtime import get_world
from worldflow.core.serde import decode_value, encode_value
from worldflow.errors import NotInWorkflowError, RunNotFoundError

if TYPE_CHECKING:
    from worldflow.core.world import World

__all__ = ["event_stream", "get_event", "set_event"]

_MAX_KEY = 200
#: how long a reader waits for a notification before it looks again (a safety net for
#: writes by other processes on worlds that cannot tell, e.g. SQLite)
_RECHECK_SECONDS = 1.0


def event_stream(key: str) -> str:
    """The stream that holds the values published under `key`."""
    return f"$event:{key}"


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY:
        raise ValueError(f"event key must be a non-empty string of at most {_MAX_KEY} "
                         f"characters, got {key!r:.80}")


def set_event(key: str, value: Any) -> None:
    """Publish `value` under `key` from the running workflow (the last one set wins);
    `get_event(run_id, key)` reads it from anywhere. Only inside a workflow."""
    instance = current_instance()
    if instance is None:
        raise NotInWorkflowError("worldflow.set_event() works only inside a workflow "
                                 "function; read values with get_event()")
    _check_key(key)
    instance.publish(key, encode_value(value, what=f"event {key!r}"))


async def get_event(run_id: str, key: str, timeout: float | None = None,
                    world: World | None = None) -> Any:
    """The last value run `run_id` published under `key`, waiting until it publishes
    one; `None` after `timeout` seconds, or if the run ended without publishing it.
    `RunNotFoundError` for an unknown run."""
    _check_key(key)
    if timeout is not None and (isinstance(timeout, bool)
                                or not isinstance(timeout, int | float) or timeout < 0):
        raise TypeError(f"get_event(timeout=...) must be a number of seconds >= 0, "
                        f"got {timeout!r}")
    the_world = await get_world(world)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    name = event_stream(key)
    while True:
        run = await the_world.get_run(run_id)
        if run is None:
            raise RunNotFoundError(f"run not found: {run_id}")
        count = next((n for s, n, _ in await the_world.list_streams(run_id) if s == name), 0)
        if count:
            chunks, _ = await the_world.read_stream(run_id, name, count - 1, 1)
            if chunks:
                return decode_value(chunks[-1].data, Any)
        if run.status.is_terminal:
            return None
        wait = _RECHECK_SECONDS
        if deadline is not None:
            wait = min(wait, deadline - loop.time())
            if wait <= 0:
                return None
        await the_world.wait_stream(run_id, name, wait)
