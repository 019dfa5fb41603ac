"""Input from outside a run on Postgres: cancels, hook payloads, messages, child ends.

Each lands in the run's inbox in one transaction with the wake-up of its job, and a
NOTIFY tells this world's processes (and, when the run belongs to another job prefix,
that prefix's processes too). Hooks are read here too, since a
hook's token is how a payload finds its run. Separate from the queue because these
writes come from callers outside the run, and check that the run can still take them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worldflow.core.records import HookRecord, InboxRecord
from worldflow.errors import HookNotFoundError, RunFinishedError, RunNotFoundError
from worldflow.worlds.postgres import sql
from worldflow.worlds.postgres.codec import decode_hook, decode_raw
from worldflow.worlds.postgres.connections import PostgresConnections
from worldflow.worlds.postgres.messages import InboxChanged

if TYPE_CHECKING:
    import asyncpg
    from msgspec import Raw

__all__ = ["TERMINAL", "RunInbox"]

TERMINAL = ("completed", "failed", "cancelled", "continued")


class RunInbox(PostgresConnections):
    """Push input from outside into runs' inboxes; read inboxes and hooks."""

    async def _push_inbox(self, c: asyncpg.Connection, run_id: str, kind: str,
                          token: str | None, payload: Raw | None) -> None:
        now = self.now()
        await c.execute(sql.LOCK_JOB, run_id)
        await c.execute(sql.INSERT_INBOX, run_id, kind, token,
                        None if payload is None else bytes(payload).decode(), now)
        wake = sql.WAKE_JOB_TO_CANCEL if kind == "cancel" else sql.WAKE_JOB
        prefix = await c.fetchval(wake, now, run_id)
        await self._notify(c, InboxChanged(run_id))
        if prefix is not None and prefix != self.job_prefix:
            await self._notify(c, InboxChanged(run_id), f"worldflow_{prefix.lower()}")

    async def request_cancel(self, run_id: str) -> bool:
        async def cancel(c: asyncpg.Connection) -> bool:
            status = await c.fetchval(sql.RUN_STATUS, run_id)
            if status is None:
                raise RunNotFoundError(f"run not found: {run_id}")
            if status in TERMINAL:
                return False
            await self._push_inbox(c, run_id, "cancel", None, None)
            return True

        queued = await self._run(cancel, transaction=True)
        if queued:
            self._signal_inbox(run_id)
        return queued

    async def resume_hook(self, token: str, payload: Raw) -> str:
        async def resume(c: asyncpg.Connection) -> str:
            row = await c.fetchrow(sql.HOOK_RUN, token)
            if row is None or row[1] != "active":
                raise HookNotFoundError(f"hook not found: {token!r} (unknown or disposed)")
            if row[2] in TERMINAL:
                raise RunFinishedError(f"run {row[0]} has finished; hook {token!r} takes "
                                       f"no more payloads")
            await self._push_inbox(c, row[0], "hook", token, payload)
            return str(row[0])

        run_id = await self._run(resume, transaction=True)
        self._signal_inbox(run_id)
        return run_id

    async def send_message(self, run_id: str, topic: str, payload: Raw) -> None:
        async def send(c: asyncpg.Connection) -> None:
            status = await c.fetchval(sql.RUN_STATUS, run_id)
            if status is None:
                raise RunNotFoundError(f"run not found: {run_id}")
            if status in TERMINAL:
                raise RunFinishedError(f"run {run_id} is {status}; it takes no more "
                                       f"messages")
            await self._push_inbox(c, run_id, "message", topic, payload)

        await self._run(send, transaction=True)
        self._signal_inbox(run_id)

    async def child_ended(self, parent_run_id: str, child_run_id: str) -> None:
        async def tell(c: asyncpg.Connection) -> bool:
            status = await c.fetchval(sql.RUN_STATUS, parent_run_id)
            if status is None or status in TERMINAL:
                return False
            await self._push_inbox(c, parent_run_id, "child_ended", child_run_id, None)
            return True

        if await self._run(tell, transaction=True):
            self._signal_inbox(parent_run_id)

    async def read_inbox(self, run_id: str) -> list[InboxRecord]:
        rows = await self._run(lambda c: c.fetch(sql.READ_INBOX, run_id))
        return [InboxRecord(r[0], r[1], r[2], r[3], decode_raw(r[4]), r[5]) for r in rows]

    async def get_hook(self, token: str) -> HookRecord | None:
        row = await self._run(lambda c: c.fetchrow(sql.GET_HOOK, token))
        return None if row is None else decode_hook(row)

    async def list_hooks(self, run_id: str | None = None) -> list[HookRecord]:
        rows = await self._run(lambda c: c.fetch(sql.LIST_HOOKS, run_id))
        return [decode_hook(r) for r in rows]
