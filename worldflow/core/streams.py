"""Streams: ordered chunks a step writes with `get_writable()`, read live with
`Run.stream()`.

Retry rule: each chunk remembers the step that wrote it. When a step is retried, its
new attempt skips as many chunks as earlier attempts of the same step already stored,
so a reader never sees a chunk twice (a retried step that writes the same chunks in
the same order continues exactly where the failed attempt stopped). Chunks are stored
at consecutive indexes; writers of one run's stream are serialised in its process.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any

import msgspec

from worldflow.core.context import step_context
from worldflow.core.serde import decode_value, encode_value
from worldflow.errors import NotInWorkflowError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

    from worldflow.core.world import World

__all__ = ["StreamWriter", "get_writable", "read_stream"]

_locks: dict[tuple[int, str, str], asyncio.Lock] = {}
_next_index: dict[tuple[int, str, str], int] = {}


def get_writable(name: str = "default") -> StreamWriter:
    """An async writer for stream `name` of the running workflow (inside a step).

    ``await w.write(chunk)`` stores bytes or any encodable value durably and in order;
    ``await w.close()`` marks the stream complete (``async with get_writable() as w:``
    closes it on exit). Readers use ``run.stream(name)``.
    """
    ctx = step_context.get()
    if ctx is None:
        raise NotInWorkflowError("get_writable() works only inside a step run by a workflow")
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValueError(f"stream name must be a non-empty string of at most 200 "
                         f"characters, got {name!r:.80}")
    return StreamWriter(ctx.world, ctx.metadata.run_id, name, ctx.metadata.step_id)


class StreamWriter:
    def __init__(self, world: World, run_id: str, name: str, writer_id: str) -> None:
        self.world = world
        self.run_id = run_id
        self.name = name
        self._writer_id = writer_id
        self._skip: int | None = None
        self._count = 0
        self._key = (id(world), run_id, name)

    async def _prepare(self) -> None:
        index, skip = 0, 0
        while True:
            chunks, _ = await self.world.read_stream(self.run_id, self.name, index)
            if not chunks:
                break
            for chunk in chunks:
                if _writer_of(chunk.data) == self._writer_id:
                    skip += 1
            index = chunks[-1].index + 1
        self._skip = skip
        _next_index[self._key] = max(_next_index.get(self._key, 0), index)

    async def write(self, chunk: Any) -> None:
        if isinstance(chunk, bytes | bytearray | memoryview):
            envelope = {"w": self._writer_id, "b": base64.b64encode(bytes(chunk)).decode()}
        else:
            encode_value(chunk, what=f"stream {self.name!r} chunk")
            envelope = {"w": self._writer_id, "v": chunk}
        lock = _locks.setdefault(self._key, asyncio.Lock())
        async with lock:
            if self._skip is None:
                await self._prepare()
            self._count += 1
            if self._count <= (self._skip or 0):
                return  # an earlier attempt of this step already stored it
            index = _next_index.get(self._key, 0)
            await self.world.write_stream(self.run_id, self.name,
                                          [(index, msgspec.Raw(msgspec.json.encode(envelope)))])
            _next_index[self._key] = index + 1

    async def close(self) -> None:
        await self.world.write_stream(self.run_id, self.name, [], close=True)
        _locks.pop(self._key, None)
        _next_index.pop(self._key, None)

    async def __aenter__(self) -> StreamWriter:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc is None:
            await self.close()


def _writer_of(data: msgspec.Raw) -> str | None:
    try:
        value = decode_value(data)
    except msgspec.DecodeError:
        return None
    return value.get("w") if isinstance(value, dict) else None


def _unwrap(data: msgspec.Raw) -> Any:
    value = decode_value(data)
    if isinstance(value, dict) and "w" in value:
        if "b" in value:
            return base64.b64decode(value["b"])
        return value.get("v")
    return value


async def read_stream(world: World, run_id: str, name: str, start: int,
                      poll: float) -> AsyncIterator[Any]:
    index = start
    while True:
        chunks, closed = await world.read_stream(run_id, name, index)
        for chunk in chunks:
            yield _unwrap(chunk.data)
            index = chunk.index + 1
        if chunks:
            continue
        if closed:
            return
        run = await world.get_run(run_id)
        if run is not None and run.status.is_terminal:
            chunks, _ = await world.read_stream(run_id, name, index)
            if not chunks:
                return
            continue
        await world.wait_stream(run_id, name, poll)
