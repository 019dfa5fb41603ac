"""Live run pages: a server-sent event stream of a run's new events.

``GET /api/runs/{run_id}/live?after=SEQ`` answers ``text/event-stream``. Every
`POLL_SECONDS` it reads the run's log after the last sequence number it has sent (one
indexed query that returns nothing while the run is idle) and, when there is news,
sends::

    event: change
    data: {"seq": int, "types": [str], "status": str}   (types: of the new events,
                                                        the last 50 at most)

When the run has ended it sends ``event: end`` (same data) and closes. It also closes
when the client goes away and after `LIFETIME_SECONDS` (the page then reconnects with
the last ``seq`` it saw), so a forgotten tab holds no connection for ever and a server
stopping waits for no stream.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from worldflow.core.world import World

__all__ = ["LIFETIME_SECONDS", "POLL_SECONDS", "run_changes"]

POLL_SECONDS = 0.5
LIFETIME_SECONDS = 60.0


def _message(kind: str, data: dict[str, object]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


async def run_changes(world: World, run_id: str, after_seq: int,
                      is_disconnected: Callable[[], Awaitable[bool]], *,
                      poll_seconds: float = POLL_SECONDS,
                      lifetime_seconds: float = LIFETIME_SECONDS) -> AsyncIterator[str]:
    """The event-stream text of `run_id`'s changes after `after_seq` (see above)."""
    deadline = anyio.current_time() + lifetime_seconds
    last_seq = after_seq
    first = True
    yield "retry: 2000\n\n"
    while True:
        events = await world.list_events(run_id, after_seq=last_seq)
        # the run's row only when its log grew (or at first, to see an ended run)
        run = await world.get_run(run_id) if events or first else None
        first = False
        if events:
            last_seq = events[-1].seq
        ended = run is not None and run.status.is_terminal
        if events or ended:
            status = "" if run is None else run.status.value
            yield _message("end" if ended else "change",
                           {"seq": last_seq, "types": [e.event.__struct_config__.tag
                                                       for e in events[-50:]],
                            "status": status})
        if ended or anyio.current_time() >= deadline or await is_disconnected():
            return
        await anyio.sleep(poll_seconds)
