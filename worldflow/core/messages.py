"""Messages by run id: `send(run_id, message, topic)` from anywhere, `receive(topic)`
in the workflow.

A message travels like a hook payload: the world keeps it in the run's inbox (kind
"message", kept while the run is evicted, and its arrival wakes the run); the run's
actor takes it into the log as a `message_received` event, and the workflow gets it
from that event, live and on replay alike. So each message is received exactly once,
in arrival order per topic, and a `receive` that timed out never takes one.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from worldflow.core.durations import resolve_deadline
from worldflow.core.instance import current_instance
from worldflow.core.runtime import get_world
from worldflow.core.serde import decode_value, encode_value
from worldflow.errors import NotInWorkflowError

if TYPE_CHECKING:
    import asyncio

    from worldflow.core.world import World

__all__ = ["receive", "send"]

_MAX_TOPIC = 200


def _check_topic(topic: Any) -> None:
    if not isinstance(topic, str) or not topic or len(topic) > _MAX_TOPIC:
        raise ValueError(f"topic must be a non-empty string of at most {_MAX_TOPIC} "
                         f"characters, got {topic!r:.80}")


async def send(run_id: str, message: Any, topic: str = "default",
               world: World | None = None) -> None:
    """Send `message` (any value msgspec can encode) to run `run_id` under `topic`.

    It waits in the run's inbox until the workflow calls `receive(topic)`; each message
    is received once, in the order sent. `RunNotFoundError` for an unknown run,
    `RunFinishedError` for a run that has ended, `TypeError` for a value that cannot
    be stored (nothing is sent).
    """
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"send(run_id=...) must be a non-empty string, got {run_id!r:.80}")
    _check_topic(topic)
    payload = encode_value(message, what=f"message for run {run_id!r}")
    the_world = await get_world(world)
    await the_world.send_message(run_id, topic, payload)


async def receive(topic: str = "default", timeout: Any = None) -> Any:
    """The next message sent to this run under `topic`, waiting durably for it; `None`
    if `timeout` (a duration: "30s", "1h", seconds, a timedelta) passes first.
    Only inside a workflow."""
    instance = current_instance()
    if instance is None:
        raise NotInWorkflowError("worldflow.receive() works only inside a workflow "
                                 "function; use send() to send a message to a run")
    _check_topic(topic)
    buffered = instance.messages.get(topic)
    if buffered:
        return decode_value(buffered.popleft(), Any)
    waiter: asyncio.Future[Any] = instance.loop.create_future()
    instance.message_waiters.setdefault(topic, collections.deque()).append(waiter)
    if timeout is None:
        return decode_value(await waiter, Any)
    resume_at = resolve_deadline(timeout, instance.now, what="receive timeout")
    handle = instance.create_timer(resume_at, _time_out, (waiter,), None)
    try:
        payload = await waiter
    finally:
        handle.cancel()
    return None if payload is None else decode_value(payload, Any)


def _time_out(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(None)
