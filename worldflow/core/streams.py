"""Streams: ordered chunks a step writes with `get_writable()`, read live with
`Run.stream()`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worldflow.core.serde import decode_value

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from worldflow.worlds.base import World

__all__ = ["read_stream"]


async def read_stream(world: World, run_id: str, name: str, start: int,
                      poll: float) -> AsyncIterator[Any]:
    index = start
    while True:
        chunks, closed = await world.read_stream(run_id, name, index)
        for chunk in chunks:
            yield decode_value(chunk.data)
            index = chunk.index + 1
        if not chunks:
            if closed:
                return
            run = await world.get_run(run_id)
            if run is not None and run.status.is_terminal:
                chunks, closed = await world.read_stream(run_id, name, index)
                if not chunks:
                    return
                continue
            await world.wait_stream(run_id, name, poll)  # type: ignore[attr-defined]
