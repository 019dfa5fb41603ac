"""LISTEN on the world's channel, on a connection of its own, reconnecting after a
server restart (and then telling the world that notifications may have been missed).
Payloads are decoded into the typed notices of messages.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from worldflow.worlds.postgres.messages import Notice, decode_notice

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import asyncpg

__all__ = ["Listener"]

logger = logging.getLogger("worldflow.world.postgres")


class Listener:
    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], channel: str,
                 on_notice: Callable[[int, Notice], None],
                 on_reconnect: Callable[[], None]) -> None:
        self._connect = connect
        self._channel = channel
        self._on_notice = on_notice
        self._on_reconnect = on_reconnect
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._listen()
        self._task = asyncio.get_running_loop().create_task(self._watch(),
                                                            name="worldflow-postgres-listen")

    async def _listen(self) -> None:
        conn = await self._connect()
        conn.add_termination_listener(lambda _: self._lost.set())
        await conn.add_listener(self._channel, self._notified)
        self._conn = conn
        self._lost.clear()

    def _notified(self, _conn: Any, pid: int, _channel: str, payload: str) -> None:
        try:
            notice = decode_notice(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            # e.g. a process of an older worldflow on the same channel
            logger.warning("ignored a notification this worldflow cannot read: %r", payload)
            return
        self._on_notice(pid, notice)

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._lost.wait()
            if self._conn is not None and not self._conn.is_closed() and not self._lost.is_set():
                continue
            delay = 0.1
            while True:
                try:
                    await self._listen()
                    break
                except Exception as exc:  # whatever the broken server did: try again
                    logger.warning("LISTEN connection lost; reconnecting (%s)", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            self._on_reconnect()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            try:
                async with asyncio.timeout(5):
                    await self._conn.close()
            except Exception:
                self._conn.terminate()
            self._conn = None
