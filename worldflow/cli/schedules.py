"""`worldflow schedules list|pause|resume|delete|trigger`: a world's cron schedules.

With ``--json``, ``list`` prints ``{"schedules": [Schedule]}`` and the other commands
print one ``Schedule`` (``trigger``: ``{"schedule_id": str, "run_id": str}``)::

    {"schedule_id": str, "workflow_name": str, "cron": str, "timezone": str,
     "catchup": "latest" | "all" | "none", "paused": bool, "input": any,
     "last_tick": str, "next_tick": str | null, "created_at": str, "updated_at": str}

(`next_tick`: when its next run starts, null while paused; times are ISO 8601 UTC.)
An unknown schedule id is one line on stderr and exit status 1.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from worldflow.cli.render import print_json
from worldflow.core.schedules import (
    delete_schedule,
    next_run_at,
    pause_schedule,
    resume_schedule,
    trigger_schedule,
)

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

    from worldflow.core.records import ScheduleRecord
    from worldflow.core.world import World

__all__ = ["SCHEDULE_COMMANDS", "add_schedules_parser", "schedule_dict"]


def add_schedules_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """`worldflow schedules ...` under the command's subparsers."""
    cmd = commands.add_parser("schedules", help="list, pause, resume, delete or trigger "
                                                "cron schedules")
    action = cmd.add_subparsers(dest="what", required=True, metavar="ACTION")
    listing = action.add_parser("list", parents=[common],
                                help="every schedule with its next tick")
    listing.add_argument("--json", action="store_true")
    for name, text in (("pause", "stop starting runs for a schedule"),
                       ("resume", "start runs again from the next tick"),
                       ("delete", "delete a schedule (its runs stay)"),
                       ("trigger", "start one run of a schedule now")):
        sub = action.add_parser(name, parents=[common], help=text)
        sub.add_argument("schedule_id", metavar="SCHEDULE_ID")
        sub.add_argument("--json", action="store_true")


def schedule_dict(schedule: ScheduleRecord, now: Any) -> dict[str, Any]:
    """The JSON shape of a schedule (see the module's docstring)."""
    try:
        upcoming = next_run_at(schedule, now)
    except ValueError:  # a cron or zone this process cannot read: still listed
        upcoming = None
    try:
        args: Any = json.loads(bytes(schedule.input))
    except ValueError:
        args = None
    return {
        "schedule_id": schedule.schedule_id, "workflow_name": schedule.workflow_name,
        "cron": schedule.cron, "timezone": schedule.timezone, "catchup": schedule.catchup,
        "paused": schedule.paused, "input": args,
        "last_tick": schedule.last_tick.isoformat(),
        "next_tick": None if upcoming is None else upcoming.isoformat(),
        "created_at": schedule.created_at.isoformat(),
        "updated_at": schedule.updated_at.isoformat(),
    }


async def schedules_list(world: World, args: argparse.Namespace, console: Console) -> None:
    now = world.now()
    schedules = [schedule_dict(s, now) for s in await world.list_schedules()]
    if args.json:
        print_json({"schedules": schedules})
        return
    if not schedules:
        console.print("no schedules")
        return
    table = Table(header_style="bold")
    for column in ("id", "workflow", "cron", "timezone", "catch-up", "paused",
                   "next tick (UTC)"):
        table.add_column(column, overflow="fold")
    for s in schedules:
        table.add_row(Text(s["schedule_id"]), Text(s["workflow_name"]), Text(s["cron"]),
                      Text(s["timezone"]), s["catchup"],
                      Text("paused", style="yellow") if s["paused"] else "no",
                      "-" if s["next_tick"] is None
                      else s["next_tick"][:19].replace("T", " "))
    console.print(table)


async def _show(world: World, args: argparse.Namespace, console: Console,
                schedule: ScheduleRecord, message: str) -> None:
    if args.json:
        print_json(schedule_dict(schedule, world.now()))
    else:
        console.print(Text(message))


async def schedules_pause(world: World, args: argparse.Namespace, console: Console) -> None:
    schedule = await pause_schedule(args.schedule_id, world=world)
    await _show(world, args, console, schedule, f"schedule {schedule.schedule_id} paused")


async def schedules_resume(world: World, args: argparse.Namespace, console: Console) -> None:
    schedule = await resume_schedule(args.schedule_id, world=world)
    upcoming = next_run_at(schedule, world.now())
    when = "" if upcoming is None else f"; next tick {upcoming.isoformat()}"
    await _show(world, args, console, schedule,
                f"schedule {schedule.schedule_id} resumed{when}")


async def schedules_delete(world: World, args: argparse.Namespace, console: Console) -> None:
    await delete_schedule(args.schedule_id, world=world)
    if args.json:
        print_json({"schedule_id": args.schedule_id, "deleted": True})
    else:
        console.print(Text(f"schedule {args.schedule_id} deleted (its runs stay)"))


async def schedules_trigger(world: World, args: argparse.Namespace, console: Console) -> None:
    run = await trigger_schedule(args.schedule_id, world=world)
    if args.json:
        print_json({"schedule_id": args.schedule_id, "run_id": run.run_id})
    else:
        console.print(Text(f"started run {run.run_id}; a worker of the world runs it"))


SCHEDULE_COMMANDS = {
    ("schedules", "list"): schedules_list,
    ("schedules", "pause"): schedules_pause,
    ("schedules", "resume"): schedules_resume,
    ("schedules", "delete"): schedules_delete,
    ("schedules", "trigger"): schedules_trigger,
}
