"""Cron schedules in SQLite: plain sqlite3 functions, writes run in the writer's
transaction, reads in a read connection's thread."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from msgspec import Raw

from worldflow.core.records import ScheduleRecord
from worldflow.worlds.sqlite.codec import decode_time, encode_json, encode_time, numbered

if TYPE_CHECKING:
    import datetime as dt
    import sqlite3
    from collections.abc import Sequence

__all__ = ["advance_schedule", "delete_schedule", "get_schedule", "list_schedules",
           "put_schedule", "set_schedule_paused"]

SCHEDULE_COLUMNS = ("id, workflow_name, cron, timezone, catchup, input, paused, last_tick, "
                    "created_at, updated_at")
SELECT_SCHEDULE = "SELECT " + SCHEDULE_COLUMNS + " FROM workflow_schedules WHERE id = ?"
SELECT_SCHEDULES = "SELECT " + SCHEDULE_COLUMNS + " FROM workflow_schedules ORDER BY id"
# an update keeps paused, last_tick and created_at: re-creating a schedule (e.g. each
# worker's start) neither resumes it nor re-runs ticks
UPSERT_SCHEDULE = ("INSERT INTO workflow_schedules (" + SCHEDULE_COLUMNS + ") "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                   "workflow_name = excluded.workflow_name, cron = excluded.cron, "
                   "timezone = excluded.timezone, catchup = excluded.catchup, "
                   "input = excluded.input, updated_at = excluded.updated_at")
# resuming skips the ticks that passed while paused: last_tick becomes at least now
SET_PAUSED = ("UPDATE workflow_schedules SET "
              "last_tick = CASE WHEN paused = 1 AND ?2 = 0 THEN max(last_tick, ?3) "
              "ELSE last_tick END, paused = ?2, updated_at = ?3 WHERE id = ?1")
DELETE_SCHEDULE = "DELETE FROM workflow_schedules WHERE id = ?"
ADVANCE_SCHEDULE = "UPDATE workflow_schedules SET last_tick = ?3 WHERE id = ?1 AND last_tick = ?2"


def decode_schedule(row: Sequence[Any]) -> ScheduleRecord:
    (schedule_id, workflow_name, cron, timezone, catchup, input_, paused, last_tick,
     created_at, updated_at) = row
    return ScheduleRecord(schedule_id, workflow_name, cron, timezone, catchup,
                          Raw(input_.encode()), bool(paused), _time(last_tick),
                          _time(created_at), _time(updated_at))


def _time(text: str) -> dt.datetime:
    value = decode_time(text)
    assert value is not None
    return value


def put_schedule(conn: sqlite3.Connection, schedule: ScheduleRecord) -> ScheduleRecord:
    conn.execute(UPSERT_SCHEDULE, (
        schedule.schedule_id, schedule.workflow_name, schedule.cron, schedule.timezone,
        schedule.catchup, encode_json(schedule.input), int(schedule.paused),
        encode_time(schedule.last_tick), encode_time(schedule.created_at),
        encode_time(schedule.updated_at)))
    return decode_schedule(conn.execute(SELECT_SCHEDULE, (schedule.schedule_id,)).fetchone())


def get_schedule(conn: sqlite3.Connection, schedule_id: str) -> ScheduleRecord | None:
    row = conn.execute(SELECT_SCHEDULE, (schedule_id,)).fetchone()
    return None if row is None else decode_schedule(row)


def list_schedules(conn: sqlite3.Connection) -> list[ScheduleRecord]:
    return [decode_schedule(row) for row in conn.execute(SELECT_SCHEDULES).fetchall()]


def set_schedule_paused(conn: sqlite3.Connection, schedule_id: str, paused: bool,
                        now: dt.datetime) -> ScheduleRecord | None:
    conn.execute(SET_PAUSED, numbered(schedule_id, int(paused), encode_time(now)))
    return get_schedule(conn, schedule_id)


def delete_schedule(conn: sqlite3.Connection, schedule_id: str) -> bool:
    return conn.execute(DELETE_SCHEDULE, (schedule_id,)).rowcount > 0


def advance_schedule(conn: sqlite3.Connection, schedule_id: str,
                     expected_last_tick: dt.datetime, new_last_tick: dt.datetime) -> bool:
    return conn.execute(ADVANCE_SCHEDULE, numbered(
        schedule_id, encode_time(expected_last_tick), encode_time(new_last_tick))).rowcount > 0
