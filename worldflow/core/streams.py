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
import unicodedata
from typing import TYPE_CHECKING, Any

import msgspec

from worldflow.core.context import step_context
from worldflow.core.serde import decode_value, encode_value
from worldflow.errors import NotInWorkflowError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

    from worldflow.core.world import World

__all__ = ["MAX_STREAM_NAME", "StreamWriter", "check_stream_name", "get_writable",
           "read_stream"]

#: the longest stream name, in characters
MAX_STREAM_NAME = 200

_locks: dict[tuple[int, str, str], asyncio.Lock] = {}
_next_index: dict[tuple[int, str, str], int] = {}


def get_writable(name: str = "default") -> StreamWriter:
    """An async writer for stream `name` of the running workflow (inside a step).

    ``await w.write(chunk)`` stores bytes or any encodable value durably and in order;
    ``await w.close()`` marks the stream complete (``async with get_writable() as w:``
    closes it on exit). Readers use ``run.stream(name)``.

    `name` may hold any printable text (``/``, ``?``, ``#``, ``%``, spaces, any script);
    wherever it goes into a URL it is percent-encoded. Refused with ValueError: an empty
    name, one with control characters (or lone surrogates), or more than
    `MAX_STREAM_NAME` characters.
    """
    ctx = step_context.get()
    if ctx is None:
        raise NotInWorkflowError("get_writable() works only inside a step run by a workflow")
    check_stream_name(name)
    return StreamWriter(ctx.world, ctx.metadata.run_id, name, ctx.metadata.step_id)


def check_stream_name(name: object) -> None:
    """Raise ValueError (TypeError for a non-string) unless `name` can name a stream."""
    if not isinstance(name, str):
        raise TypeError(f"get_writable(name=...) takes a string, got {type(name).__name__}")
    if not name:
        raise ValueError("get_writable(name=...): the stream name is empty; give it a name "
                         "(the default is 'default')")
    if len(name) > MAX_STREAM_NAME:
        raise ValueError(f"get_writable(name=...): the stream name has {len(name)} "
                         f"characters, at most {MAX_STREAM_NAME} are allowed: {name!r:.60}")
    for position, char in enumerate(name):
        # control characters cannot be shown or typed, and a NUL or lone surrogate
        # cannot even be stored; everything else is fine, and percent-encoded in URLs
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(f"get_writable(name=...): the stream name {name!r:.80} has a "
                             f"control character {char!r} at position {position}; use "
                             f"printable characters only")


class StreamWriter:
    """Writes the chunks of one stream of one run (made by `get_writable()`)."""


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
