"""Durable cron schedules: `create_schedule`, `list_schedules`, `pause_schedule`,
`resume_schedule`, `delete_schedule`, and the engine's scheduler that starts their runs.

A schedule is stored in the world. Each engine (every worker process) runs one
`Scheduler` task that sleeps on the world's timers until the earliest next tick, then
starts that tick's run. Two things make a tick start exactly one run however many
workers share the world:

- the run id is derived from the tick (``"{schedule_id}@2026-11-26T03:00:00Z"``) and
  `World.create_run` is idempotent by id, so a tick can never start two runs;
- the schedule's `last_tick` moves only by compare-and-set (`World.advance_schedule`),
  after the run exists: a worker that crashes in between leaves the tick to the next
  one, which finds the run already there.

Cron expressions are evaluated by `cronsim` (5 fields, or 6 with seconds first), not by
hand. We picked cronsim over croniter: both are on PyPI and released recently, but
cronsim has no dependencies (croniter needs python-dateutil), ships type hints
(`py.typed`, so `mypy --strict` checks our calls), and documents its DST behaviour as
Debian cron's: a tick in the hour skipped by spring-forward runs at the first time
after the gap (a daily 02:30 in Europe/Berlin runs at 03:00 on that day); a tick in the
hour repeated by fall-back runs once (at its first occurrence). Zones come from
`zoneinfo`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import zoneinfo
from typing import TYPE_CHECKING, Any

from cronsim import CronSim, CronSimError

from worldflow.core import registry, runtime
from worldflow.core.records import NewRun, ScheduleRecord
from worldflow.errors import ScheduleNotFoundError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from worldflow.core.api import Run
    from worldflow.core.engine import Engine
    from worldflow.core.world import World

__all__ = [
    "CATCHUP_MODES",
    "MAX_CATCHUP",
    "Scheduler",
    "check_cron",
    "create_schedule",
    "delete_schedule",
    "list_schedules",
    "next_run_at",
    "next_tick",
    "pause_schedule",
    "resume_schedule",
    "scheduled_at_of",
    "tick_run_id",
    "trigger_schedule",
]

logger = logging.getLogger("worldflow.schedules")

#: what to do with ticks missed while no worker ran
CATCHUP_MODES = ("latest", "all", "none")
#: `catchup="all"` starts at most this many missed ticks (the most recent ones)
MAX_CATCHUP = 1000
#: with `catchup="none"`, a tick at most this old when a worker sees it still runs
#: (it is late, not missed); older ones are skipped
ON_TIME = dt.timedelta(seconds=60)
#: real seconds between re-reads of the schedules (changes made by other processes)
REREAD_SECONDS = 60.0
#: seconds before a schedule whose tick could not be started is tried again
RETRY_SECONDS = 5.0

_SCHEDULE_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,179}$")
_TICK_RUN_ID = re.compile(r"^.+@(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)Z$")


# -- cron and ticks ------------------------------------------------------------------
def _zone(name: object) -> zoneinfo.ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValueError(f"timezone must be an IANA time zone name such as 'UTC' or "
                         f"'Europe/Berlin', got {name!r:.80}")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"timezone: unknown time zone {name!r:.80} (use an IANA name "
                         f"such as 'UTC' or 'Europe/Berlin')") from exc


def check_cron(cron: object) -> None:
    """`ValueError` naming the field unless `cron` is a cron expression: 5 fields
    (minute hour day-of-month month day-of-week) or 6 (seconds first)."""
    if not isinstance(cron, str) or not cron.strip():
        raise ValueError(f"cron must be a cron expression such as '*/5 * * * *', "
                         f"got {cron!r:.80}")
    try:
        CronSim(cron, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    except CronSimError as exc:
        raise ValueError(f"cron: invalid expression {cron!r:.80}: {exc} (5 fields: "
                         f"minute hour day-of-month month day-of-week, or 6 with "
                         f"seconds first)") from None


def next_tick(cron: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """The first tick of `cron` in `timezone` strictly after `after`, in UTC."""
    zone = _zone(timezone)
    tick: dt.datetime = next(CronSim(cron, after.astimezone(zone)))
    return tick.astimezone(dt.UTC)


def due_ticks(schedule: ScheduleRecord, now: dt.datetime, limit: int) -> list[dt.datetime]:
    """Ticks after `schedule.last_tick` and at or before `now`, newest first, at most
    `limit` of them (UTC)."""
    zone = _zone(schedule.timezone)
    start = now.astimezone(zone)
    if start.microsecond == 0:
        # reverse iteration starts strictly before a whole second; from just after it,
        # a tick at exactly `now` counts
        start += dt.timedelta(microseconds=1)
    ticks: list[dt.datetime] = []
    for tick in CronSim(schedule.cron, start, reverse=True):
        at = tick.astimezone(dt.UTC)
        if at <= schedule.last_tick or len(ticks) >= limit:
            break
        ticks.append(at)
    return ticks


def tick_run_id(schedule_id: str, tick: dt.datetime) -> str:
    """The id of the run a schedule starts for `tick`: ``"{schedule_id}@{ISO 8601 UTC}"``."""
    return f"{schedule_id}@{tick.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def scheduled_at_of(run_id: str) -> dt.datetime | None:
    """The tick a scheduled run was started for, read back from its id (None: not a
    scheduled run)."""
    match = _TICK_RUN_ID.match(run_id)
    if match is None:
        return None
    try:
        return dt.datetime.fromisoformat(match.group(1)).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


# -- the public functions ------------------------------------------------------------
async def create_schedule(fn: Callable[..., Awaitable[Any]], cron: str = "*/5 * * * *",
                          schedule_id: str | None = None, args: tuple[Any, ...] = (),
                          kwargs: dict[str, Any] | None = None, timezone: str = "UTC",
                          catchup: str = "latest", world: World | None = None
                          ) -> ScheduleRecord:
    """Store a schedule that starts a run of `fn` (a `@workflow`) at each tick of
    `cron` in `timezone`, with these arguments; return it as stored.

    Idempotent by `schedule_id` (default: the workflow's name): creating it again with
    other values updates it (keeping whether it is paused and which ticks have run).
    Ticks missed while no worker ran: `catchup="latest"` runs the latest only, `"all"`
    each of them (at most `MAX_CATCHUP`, the most recent), `"none"` none. A malformed
    cron, an unknown time zone or catch-up mode raise `ValueError` naming it, and
    nothing is stored."""
    from worldflow.core.api import check_arguments

    defn = getattr(fn, "__worldflow_workflow__", None)
    if defn is None:
        raise TypeError(f"create_schedule() needs a @workflow function, got {fn!r:.80}")
    check_cron(cron)
    _zone(timezone)
    if catchup not in CATCHUP_MODES:
        raise ValueError(f"catchup must be one of {', '.join(map(repr, CATCHUP_MODES))}, "
                         f"got {catchup!r:.80}")
    sid = defn.name if schedule_id is None else schedule_id
    check_schedule_id(sid, defaulted=schedule_id is None)
    if not isinstance(args, tuple | list):
        raise TypeError(f"args must be a tuple of the workflow's arguments, got {args!r:.80}")
    kwargs = dict(kwargs or {})
    check_arguments(defn.fn, defn.name, tuple(args), kwargs)
    encoded = defn.codec.encode(tuple(args), kwargs, kind="workflow")
    the_world = await runtime.get_world(world)
    now = the_world.now()
    stored = await the_world.put_schedule(ScheduleRecord(
        sid, defn.name, cron, timezone, catchup, encoded, False, now, now, now))
    notify_schedules(the_world)
    return stored


async def list_schedules(world: World | None = None) -> list[ScheduleRecord]:
    """Every schedule of the world, by id."""
    the_world = await runtime.get_world(world)
    return await the_world.list_schedules()


async def pause_schedule(schedule_id: str, world: World | None = None) -> ScheduleRecord:
    """Stop starting runs for the schedule (runs already started go on).
    `ScheduleNotFoundError` for an unknown id."""
    return await _set_paused(schedule_id, True, world)


async def resume_schedule(schedule_id: str, world: World | None = None) -> ScheduleRecord:
    """Start runs again from the next tick (ticks that passed while paused are not
    caught up). `ScheduleNotFoundError` for an unknown id."""
    return await _set_paused(schedule_id, False, world)


async def delete_schedule(schedule_id: str, world: World | None = None) -> None:
    """Delete the schedule (runs it started stay). `ScheduleNotFoundError` for an
    unknown id."""
    _check_id_type(schedule_id)
    the_world = await runtime.get_world(world)
    if not await the_world.delete_schedule(schedule_id):
        raise ScheduleNotFoundError(f"schedule not found: {schedule_id}")
    notify_schedules(the_world)


async def trigger_schedule(schedule_id: str, world: World | None = None) -> Run[Any]:
    """Start one run of the schedule now (id ``"{schedule_id}@{now}"``, to the second:
    triggering twice within one second starts one run), whether or not it is paused;
    its ticks are not affected."""
    from worldflow.core.api import Run

    _check_id_type(schedule_id)
    the_world = await runtime.get_world(world)
    schedule = await the_world.get_schedule(schedule_id)
    if schedule is None:
        raise ScheduleNotFoundError(f"schedule not found: {schedule_id}")
    now = the_world.now().replace(microsecond=0)
    record, _ = await the_world.create_run(
        NewRun(tick_run_id(schedule_id, now), schedule.workflow_name, schedule.input,
               the_world.now()), lease_owner=None, lease_seconds=the_world.lease_seconds)
    the_world.notify_work()
    return Run(record.run_id, the_world)


def check_schedule_id(schedule_id: object, *, defaulted: bool = False) -> None:
    if not isinstance(schedule_id, str) or not _SCHEDULE_ID.match(schedule_id):
        hint = " (it defaults to the workflow's name: give schedule_id=)" if defaulted else ""
        raise ValueError(f"schedule_id must be 1-179 characters of letters, digits and "
                         f". _ - :, got {schedule_id!r:.80}{hint}")


def _check_id_type(schedule_id: object) -> None:
    if not isinstance(schedule_id, str) or not schedule_id:
        raise TypeError(f"schedule id must be a non-empty string, got {schedule_id!r:.80}")


async def _set_paused(schedule_id: str, paused: bool, world: World | None) -> ScheduleRecord:
    _check_id_type(schedule_id)
    the_world = await runtime.get_world(world)
    stored = await the_world.set_schedule_paused(schedule_id, paused)
    if stored is None:
        raise ScheduleNotFoundError(f"schedule not found: {schedule_id}")
    notify_schedules(the_world)
    return stored


def notify_schedules(world: World) -> None:
    """Wake this process's scheduler: the schedules changed."""
    engine = runtime.engine_for(world)
    if engine is not None:
        engine.scheduler.wake()


# -- the scheduler -------------------------------------------------------------------
class Scheduler:
    """Starts the runs of due ticks; one per engine, a task in the engine's group."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._changed = asyncio.Event()

    def wake(self) -> None:
        self._changed.set()

    async def declare(self) -> None:
        """Create or update the schedules declared with `@workflow(schedule=...)`."""
        world = self.engine.world
        for defn in list(registry._workflows.values()):
            if defn.schedule is None:
                continue
            if not callable(getattr(world, "put_schedule", None)):
                logger.warning("workflow %s declares a schedule, but world %r cannot store "
                               "schedules", defn.name, world)
                return
            existing = await world.get_schedule(defn.name)
            if (existing is not None and existing.workflow_name == defn.name
                    and existing.cron == defn.schedule and existing.timezone == "UTC"
                    and existing.catchup == "latest" and bytes(existing.input) == b"[]"):
                continue
            now = world.now()
            await world.put_schedule(ScheduleRecord(
                defn.name, defn.name, defn.schedule, "UTC", "latest",
                defn.codec.encode((), {}, kind="workflow"), False, now, now, now))

    async def run(self) -> None:
        world = self.engine.world
        if not callable(getattr(world, "list_schedules", None)):
            # a world written before schedules existed: it has none to run
            logger.info("world %r stores no schedules; the scheduler is off", world)
            return
        while True:
            self._changed.clear()
            next_at = await self.start_due()
            # the tick's timer is on the world's clock (a test clock jumps to it); the
            # re-read, for other processes' changes, is in real time
            handle = None if next_at is None else world.timers.call_at(next_at,
                                                                       self._changed.set)
            try:
                async with asyncio.timeout(REREAD_SECONDS):
                    await self._changed.wait()
            except TimeoutError:
                pass
            finally:
                if handle is not None:
                    handle.cancel()

    async def start_due(self) -> dt.datetime | None:
        """Start the runs of every due tick; return when the next tick is due."""
        world = self.engine.world
        try:
            schedules = await world.list_schedules()
        except Exception:
            logger.warning("reading the schedules failed; retrying", exc_info=True)
            return world.now() + dt.timedelta(seconds=RETRY_SECONDS)
        earliest: dt.datetime | None = None
        for schedule in schedules:
            if schedule.paused:
                continue
            try:
                upcoming = await self._start_ticks(schedule)
            except Exception:
                logger.warning("schedule %s: starting its run failed; retrying",
                               schedule.schedule_id, exc_info=True)
                upcoming = world.now() + dt.timedelta(seconds=RETRY_SECONDS)
            if earliest is None or upcoming < earliest:
                earliest = upcoming
        return earliest

    async def _start_ticks(self, schedule: ScheduleRecord) -> dt.datetime:
        world = self.engine.world
        now = world.now()
        ticks = due_ticks(schedule, now, MAX_CATCHUP if schedule.catchup == "all" else 1)
        if ticks:
            if schedule.catchup == "all":
                chosen = ticks[::-1]
            elif schedule.catchup == "latest" or now - ticks[0] <= ON_TIME:
                chosen = ticks[:1]
            else:  # "none", and the latest tick was missed, not just late
                chosen = []
            for tick in chosen:
                await self._start_run(schedule, tick)
            # after the runs exist: a crash before this leaves the ticks to be found
            # again, and their runs already there (idempotent by id)
            await world.advance_schedule(schedule.schedule_id, schedule.last_tick, ticks[0])
        return next_tick(schedule.cron, schedule.timezone, max(now, schedule.last_tick))

    async def _start_run(self, schedule: ScheduleRecord, tick: dt.datetime) -> None:
        engine = self.engine
        world = engine.world
        run_id = tick_run_id(schedule.schedule_id, tick)
        local = (engine.has_capacity
                 and registry.get_workflow(schedule.workflow_name) is not None)
        record, created = await world.create_run(
            NewRun(run_id, schedule.workflow_name, schedule.input, world.now()),
            lease_owner=engine.worker_id if local else None,
            lease_seconds=world.lease_seconds)
        if created:
            logger.info("schedule %s: started run %s", schedule.schedule_id, run_id)
            if local:
                engine.dispatch(run_id, fresh=record)


def next_run_at(schedule: ScheduleRecord, now: dt.datetime) -> dt.datetime | None:
    """When the schedule's next run starts (None while it is paused)."""
    if schedule.paused:
        return None
    return next_tick(schedule.cron, schedule.timezone, max(now, schedule.last_tick))
