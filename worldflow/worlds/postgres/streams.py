"""Streams on Postgres: a run's named sequences of chunks, written and read in order.

Separate from the run log because a stream is written outside the group-commit path,
one transaction per write on a pooled connection, with its own NOTIFY for readers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgspec import Raw

from worldflow.core.records import StreamChunk
from worldflow.errors import RunNotFoundError
from worldflow.worlds.postgres import sql
from worldflow.worlds.postgres.codec import decode_raw
from worldflow.worlds.postgres.connections import PostgresConnections
from worldflow.worlds.postgres.messages import StreamChanged

if TYPE_CHECKING:
    from collections.abc import Sequence

    import asyncpg

__all__ = ["RunStreams"]


class RunStreams(PostgresConnections):
    """Write a run's stream chunks in order; read them and list the streams."""

    async def write_stream(self, run_id: str, name: str, chunks: Sequence[tuple[int, Raw]],
                           *, close: bool = False) -> None:
        now = self.now()

        async def write(c: asyncpg.Connection) -> None:
            if await c.fetchval(sql.STREAM_RUN_EXISTS, run_id) is None:
                raise RunNotFoundError(f"run not found: {run_id}")
            await c.execute(sql.STREAM_HEAD, run_id, name)
            length = await c.fetchval(sql.STREAM_LENGTH, run_id, name)
            for index, data in chunks:
                if index > length:
                    raise ValueError(f"stream {name!r}: chunk {index} written before "
                                     f"chunk {length}")
                if index == length:
                    await c.execute(sql.INSERT_CHUNK, run_id, name, index,
                                    bytes(data).decode(), now)
                    length += 1
            await c.execute(sql.SET_STREAM_HEAD, run_id, name, length, close)
            await self._notify(c, StreamChanged(run_id, name))

        await self._run(write, transaction=True)
        self.notify_stream(run_id, name)

    async def read_stream(self, run_id: str, name: str, start: int = 0,
                          limit: int = 1000) -> tuple[list[StreamChunk], bool]:
        async def read(c: asyncpg.Connection) -> tuple[list[StreamChunk], bool]:
            closed = bool(await c.fetchval(sql.STREAM_CLOSED, run_id, name))
            rows = await c.fetch(sql.READ_STREAM, run_id, name, start, limit)
            return [StreamChunk(run_id, name, r[0], decode_raw(r[1]) or Raw(b"null"), r[2])
                    for r in rows], closed

        return await self._run(read, transaction=True)

    async def list_streams(self, run_id: str) -> list[tuple[str, int, bool]]:
        rows = await self._run(lambda c: c.fetch(sql.LIST_STREAMS, run_id))
        return [(r[0], r[1], r[2]) for r in rows]
