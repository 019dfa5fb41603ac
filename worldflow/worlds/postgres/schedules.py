"""Cron schedules in Postgres: one row per schedule of an app (job prefix)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgspec import Raw

from worldflow.core.records import ScheduleRecord

if TYPE_CHECKING:
    import datetime as dt

    import asyncpg

__all__ = ["advance_schedule", "delete_schedule", "get_schedule", "list_schedules",
           "put_schedule", "set_schedule_paused"]

SCHEDULE_COLUMNS = ("id, workflow_name, cron, timezone, catchup, input::text, paused, "
                    "last_tick, created_at, updated_at")
GET_SCHEDULE = (f"SELECT {SCHEDULE_COLUMNS} FROM workflow_schedules "
                "WHERE job_prefix = $1 AND id = $2")
LIST_SCHEDULES = (f"SELECT {SCHEDULE_COLUMNS} FROM workflow_schedules "
                  "WHERE job_prefix = $1 ORDER BY id")
# an update keeps paused, last_tick and created_at: re-creating a schedule (e.g. each
# worker's start) neither resumes it nor re-runs ticks
PUT_SCHEDULE = (
    "INSERT INTO workflow_schedules (job_prefix, id, workflow_name, cron, timezone, "
    "catchup, input, paused, last_tick, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11) "
    "ON CONFLICT (job_prefix, id) DO UPDATE SET workflow_name = excluded.workflow_name, "
    "cron = excluded.cron, timezone = excluded.timezone, catchup = excluded.catchup, "
    "input = excluded.input, updated_at = excluded.updated_at "
    f"RETURNING {SCHEDULE_COLUMNS}")
# resuming skips the ticks that passed while paused: last_tick becomes at least now
SET_PAUSED = (
    "UPDATE workflow_schedules SET last_tick = CASE WHEN paused AND NOT $3 "
    "THEN greatest(last_tick, $4) ELSE last_tick END, paused = $3, updated_at = $4 "
    f"WHERE job_prefix = $1 AND id = $2 RETURNING {SCHEDULE_COLUMNS}")
DELETE_SCHEDULE = ("DELETE FROM workflow_schedules WHERE job_prefix = $1 AND id = $2 "
                   "RETURNING id")
ADVANCE_SCHEDULE = ("UPDATE workflow_schedules SET last_tick = $4 "
                    "WHERE job_prefix = $1 AND id = $2 AND last_tick = $3 RETURNING id")


def decode_schedule(row: asyncpg.Record) -> ScheduleRecord:
    return ScheduleRecord(row[0], row[1], row[2], row[3], row[4], Raw(row[5].encode()),
                          row[6], row[7], row[8], row[9])


async def put_schedule(c: asyncpg.Connection, prefix: str,
                       s: ScheduleRecord) -> ScheduleRecord:
    row = await c.fetchrow(PUT_SCHEDULE, prefix, s.schedule_id, s.workflow_name, s.cron,
                           s.timezone, s.catchup, bytes(s.input).decode(), s.paused,
                           s.last_tick, s.created_at, s.updated_at)
    return decode_schedule(row)


async def get_schedule(c: asyncpg.Connection, prefix: str,
                       schedule_id: str) -> ScheduleRecord | None:
    row = await c.fetchrow(GET_SCHEDULE, prefix, schedule_id)
    return None if row is None else decode_schedule(row)


async def list_schedules(c: asyncpg.Connection, prefix: str) -> list[ScheduleRecord]:
    return [decode_schedule(row) for row in await c.fetch(LIST_SCHEDULES, prefix)]


async def set_schedule_paused(c: asyncpg.Connection, prefix: str, schedule_id: str,
                              paused: bool, now: dt.datetime) -> ScheduleRecord | None:
    row = await c.fetchrow(SET_PAUSED, prefix, schedule_id, paused, now)
    return None if row is None else decode_schedule(row)


async def delete_schedule(c: asyncpg.Connection, prefix: str, schedule_id: str) -> bool:
    return await c.fetchval(DELETE_SCHEDULE, prefix, schedule_id) is not None


async def advance_schedule(c: asyncpg.Connection, prefix: str, schedule_id: str,
                           expected_last_tick: dt.datetime,
                           new_last_tick: dt.datetime) -> bool:
    return await c.fetchval(ADVANCE_SCHEDULE, prefix, schedule_id, expected_last_tick,
                            new_last_tick) is not None
