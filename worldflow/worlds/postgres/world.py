"""The Postgres world: many processes on many machines share one database.

Writes of the hot path (created runs, appended events) go through one group-commit
writer (writer.py): one round trip and one transaction for a whole batch of runs.
Queue operations and reads use a connection pool. Claims take rows with
`FOR UPDATE SKIP LOCKED` and a lease; wake-ups travel by LISTEN/NOTIFY on one channel
per job prefix (its own connection: a pooled one would lose its LISTEN on release).

PostgresWorld is composed of one class per concern over
connections.PostgresConnections (settings, pool, writers, listener): runs.RunLog
(runs and their log), queue.RunQueue (claims and leases), inbox.RunInbox (input from
outside), slots.QueueSlots and streams.RunStreams; rows become records in codec.py.
This module composes them and holds the schedules (their SQL is in schedules.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from worldflow.worlds.postgres import schedules
from worldflow.worlds.postgres.connections import PostgresConnections
from worldflow.worlds.postgres.inbox import RunInbox
from worldflow.worlds.postgres.queue import RunQueue
from worldflow.worlds.postgres.runs import RunLog
from worldflow.worlds.postgres.slots import QueueSlots
from worldflow.worlds.postgres.streams import RunStreams

if TYPE_CHECKING:
    import datetime as dt

    from worldflow.core.records import ScheduleRecord

__all__ = ["PostgresWorld"]

logger = logging.getLogger("worldflow.world.postgres")


class PostgresWorld(RunLog, RunQueue, RunInbox, QueueSlots, RunStreams,
                    PostgresConnections):
    """Runs, logs and the queue in Postgres (see README: ARCHITECTURE)."""

    name = "postgres"
    finish_poll_interval = 5.0  # NOTIFY brings run ends; polling is only a fallback

    # -- schedules --------------------------------------------------------------------------
    async def put_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord:
        return await self._run(lambda c: schedules.put_schedule(c, self.job_prefix, schedule))

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        return await self._run(lambda c: schedules.get_schedule(c, self.job_prefix,
                                                                schedule_id))

    async def list_schedules(self) -> list[ScheduleRecord]:
        return await self._run(lambda c: schedules.list_schedules(c, self.job_prefix))

    async def set_schedule_paused(self, schedule_id: str, paused: bool
                                  ) -> ScheduleRecord | None:
        now = self.now()
        return await self._run(lambda c: schedules.set_schedule_paused(
            c, self.job_prefix, schedule_id, paused, now))

    async def delete_schedule(self, schedule_id: str) -> bool:
        return await self._run(lambda c: schedules.delete_schedule(c, self.job_prefix,
                                                                   schedule_id))

    async def advance_schedule(self, schedule_id: str, expected_last_tick: dt.datetime,
                               new_last_tick: dt.datetime) -> bool:
        return await self._run(lambda c: schedules.advance_schedule(
            c, self.job_prefix, schedule_id, expected_last_tick, new_last_tick))

    def __repr__(self) -> str:
        return f"<PostgresWorld {self.address} prefix={self.job_prefix}>"
