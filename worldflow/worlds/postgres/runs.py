"""Runs and their event log on Postgres: the hot path of the world.

Creating a run and appending events go through the run's group-commit writer
(writer.py: one transaction for a whole batch of runs); the reads (a run, listings,
steps, events) go through the pool. Separate from the queue and the inbox because
these are the writes the batching exists for.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from msgspec import Raw

from worldflow.core.events import EventRecord, encode_event
from worldflow.core.records import Page, RunRecord, StepRecord, created_events, created_run
from worldflow.worlds.cursor import decode_cursor, encode_cursor
from worldflow.worlds.postgres import sql
from worldflow.worlds.postgres.codec import (
    decode_event_row,
    decode_run,
    decode_run_or_placeholder,
    decode_step,
)
from worldflow.worlds.postgres.connections import PostgresConnections
from worldflow.worlds.postgres.messages import (
    AppendWrite,
    ApplyOutcome,
    CreateRunWrite,
    EventRow,
)
from worldflow.worlds.projection import plan_append

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from worldflow.core.records import NewRun

__all__ = ["RunLog"]


class RunLog(PostgresConnections):
    """Create runs and append to their logs through the writers; read them back."""

    async def create_run(self, run: NewRun, *, lease_owner: str | None,
                         lease_seconds: float) -> tuple[RunRecord, bool]:
        now = self.now()
        created, *started = created_events(run)
        write = CreateRunWrite(
            run_id=run.run_id, workflow_name=run.workflow_name, input=run.input,
            created_at=run.created_at, queue=run.queue, dedup_key=run.dedup_key,
            parent_run_id=run.parent_run_id, tags=dict(run.tags) or None,
            job_prefix=self.job_prefix,
            payload=Raw(encode_event(created.event)),
            lease_owner=lease_owner, now=now,
            lease_expires_at=(None if lease_owner is None
                              else now + dt.timedelta(seconds=lease_seconds)),
            started=Raw(encode_event(started[0].event)) if started else None)

        def after(outcome: ApplyOutcome) -> None:
            if outcome.created and lease_owner is None:
                self.notify_work()

        queue = self._require_writer(run.run_id).queue
        outcome: ApplyOutcome = await queue.write(write, after=after)
        if outcome.created:
            return created_run(run), True
        assert outcome.run_id is not None
        existing = await self.get_run(outcome.run_id)
        assert existing is not None
        return existing, False

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._run(lambda c: c.fetchrow(sql.GET_RUN, run_id))
        return None if row is None else decode_run(row)

    async def list_runs(self, *, status: str | None = None, workflow_name: str | None = None,
                        limit: int = 50, cursor: str | None = None,
                        tags: Mapping[str, str] | None = None,
                        since: dt.datetime | None = None) -> Page:
        after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
        pairs = list(tags.items()) if tags else []
        query, names = sql.LIST_RUNS_BY_FILTER[
            status is not None, workflow_name is not None, after_at is not None,
            since is not None, min(len(pairs), 2)]
        values: dict[str, object] = {
            "status": None if status is None else str(status), "name": workflow_name,
            "after_at": after_at, "after_id": after_id, "since": since,
            "limit": limit + 1,
            "tag_key": pairs[0][0] if pairs else None,
            "tag_value": pairs[0][1] if pairs else None,
            "tag_keys": [key for key, _ in pairs], "tag_values": [v for _, v in pairs]}
        args = [values[name] for name in names]
        rows = await self._run(lambda c: c.fetch(query, *args))
        items = [decode_run_or_placeholder(r) for r in rows[:limit]]
        nxt = (encode_cursor(items[-1].created_at, items[-1].run_id)
               if len(rows) > limit and items else None)
        return Page(items, nxt)

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        rows = await self._run(lambda c: c.fetch(sql.LIST_STEPS, run_id))
        return [decode_step(r) for r in rows]

    async def list_events(self, run_id: str, *, after_seq: int = -1,
                          limit: int | None = None) -> list[EventRecord]:
        rows = await self._run(lambda c: c.fetch(sql.LIST_EVENTS, run_id, after_seq, limit))
        return [decode_event_row(run_id, r) for r in rows]

    async def append_events(self, run_id: str, records: Sequence[EventRecord], *,
                            inbox_ids: Sequence[int] = (), wait: bool = True) -> None:
        records = list(records)
        plan = plan_append(records)
        write = AppendWrite(
            run_id=run_id, ops=plan.ops, inbox_ids=list(inbox_ids),
            finished_at=plan.finished_at,
            events=[EventRow(r.seq, r.event_type, r.correlation_id,
                             Raw(encode_event(r.event)), r.created_at) for r in records])

        after: Callable[[ApplyOutcome], None] | None = None
        if plan.finishes:  # (only a run's end has something to announce)
            def after(_outcome: ApplyOutcome) -> None:
                self._signal_finished(run_id)

        queue = self._require_writer(run_id).queue
        if wait:
            await queue.write(write, fence=run_id, after=after)
        else:
            queue.write_nowait(write, fence=run_id, after=after)
