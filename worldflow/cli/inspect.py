"""`worldflow inspect ...` and `worldflow runs ...`: read a world, print tables or JSON.

With ``--json`` each command prints one JSON document (``json.loads`` parses it). These
shapes are stable: keys are only ever added. Times are ISO 8601 strings in UTC
(``"2024-05-01T12:00:00.123456+00:00"``) or null; durations are milliseconds (float) or
null while unfinished; `input`, `output`, `data` are the stored JSON values as written.

``Error``::

    {"type": str, "message": str, "fatal": bool, "traceback": str | null}
    (no "traceback" key in RunSummary.error)

``RunSummary`` (items of ``inspect runs``)::

    {"run_id": str, "workflow_name": str,
     "status": "pending" | "running" | "completed" | "failed" | "cancelled"
               | "corrupt",
     "corrupt": str | null,
     "queue": str, "created_at": str, "started_at": str | null,
     "completed_at": str | null, "updated_at": str, "duration_ms": float | null,
     "step_counts": {"total": int, "completed": int, "failed": int, "running": int,
                     "pending": int},
     "error": Error | null,
     "waiting": Waiting | null,   (what a running run waits for: see
                                   `worldflow.cli.waiting`; null unless running)
     "tags": {str: str}}
    (`tags`: given at start(tags=...); `inspect runs --tag KEY=VALUE` filters on them)

``Step``::

    {"step_id": str, "correlation_id": str, "step_name": str,
     "status": "pending" | "running" | "completed" | "failed",
     "attempts": int, "input": any, "output": any, "error": Error | null,
     "started_at": str | null, "completed_at": str | null, "duration_ms": float | null,
     "retries": [{"attempt": int, "failed_at": str, "retry_at": str,
                  "delay_ms": float, "error": Error, "next_started_at": str | null}]}

    (`retries`: each failed attempt that was retried; `delay_ms` is the backoff from the
    failure to `retry_at`; `next_started_at` is when the next attempt really started)

A run whose stored row cannot be decoded is listed with status ``"corrupt"`` and
`corrupt` saying why (its other fields are what could be read); asking for that run
alone fails with a one-line error naming it.

``RunDetail``: a RunSummary plus ``{"input": any, "output": any, "error": Error | null,
"steps": [Step], "parent_run_id": str | null, "children": [{"run_id": str,
"workflow_name": str}]}`` (children: the child runs its workflow started, in order).

``Event``::

    {"seq": int, "type": str, "correlation_id": str | null, "created_at": str,
     "data": {the event's fields, e.g. "step_name", "attempt", "error", "retry_at",
              "resume_at", "token", "payload", "input", "output"}}

``Hook``::

    {"token": str, "run_id": str, "correlation_id": str, "status": "active" | "disposed",
     "created_at": str, "disposed_at": str | null}
    (in ``inspect hooks`` also "received": int and "rejected": int: payloads delivered,
    and payloads refused because they do not validate as a typed hook's type; each
    refusal is a ``hook_rejected`` event with the payload and the reason)

``Chunk``: ``{"index": int, "created_at": str, "encoding": "json" | "base64",
"data": any}`` (``base64``: bytes were written; `data` is their base64 text).

Commands and their documents:

- ``inspect runs``: ``{"runs": [RunSummary], "next_cursor": str | null}``
- ``inspect runs RUN_ID``: ``RunDetail``
- ``inspect steps RUN_ID``: ``{"run_id": str, "steps": [Step]}``
- ``inspect events RUN_ID``: ``{"run_id": str, "events": [Event]}``
- ``inspect hooks [--run RUN_ID]``: ``{"hooks": [Hook]}``
- ``inspect streams RUN_ID``: ``{"run_id": str, "streams": [{"name": str, "chunks": int,
  "closed": bool}]}``
- ``inspect streams RUN_ID NAME``: ``{"run_id": str, "name": str, "closed": bool,
  "chunks": [Chunk]}``; with ``--follow``: one Chunk per line (JSON Lines) as they come
- ``runs cancel RUN_ID``: ``{"run_id": str, "cancel_requested": bool, "status": str}``
- ``runs retry RUN_ID``: ``{"run_id": str, "new_run_id": str}``
- ``runs send RUN_ID --topic T --json MESSAGE``: ``{"run_id": str, "topic": str,
  "sent": true}``
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import anyio
from rich.table import Table
from rich.text import Text

from worldflow.cli import shapes
from worldflow.cli.errors import NotFound, UsageError
from worldflow.cli.parser import tag_filter
from worldflow.cli.render import STATUS_STYLES as STATUS_STYLES
from worldflow.cli.render import (
    compact_value,
    event_details,
    format_duration,
    format_time,
    print_json,
    print_steps,
    status_text,
    tags_text,
    user_traceback,
)
from worldflow.cli.times import since_time
from worldflow.cli.waiting import run_waiting, waiting_for, waiting_text
from worldflow.errors import CorruptRecordError, RunNotFoundError

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

    from worldflow.core.records import RunRecord
    from worldflow.core.world import World

__all__ = ["COMMANDS", "NotFound", "UsageError", "event_details", "format_duration"]
# STATUS_STYLES moved to cli/render.py and is imported above "as" itself: it was defined
# here, and stays importable from here

#: how long `--follow` waits between reads of a stream another process writes
FOLLOW_POLL_SECONDS = 0.5


async def _run(world: World, run_id: str) -> RunRecord:
    run = await world.get_run(run_id)
    if run is None:
        raise RunNotFoundError(f"run not found: {run_id}")
    return run


# -- inspect runs -----------------------------------------------------------------------
async def inspect_runs(world: World, args: argparse.Namespace, console: Console) -> None:
    if args.run_id is not None:
        await _run_detail(world, args, console)
        return
    tags = tag_filter(getattr(args, "tag", None) or [])
    since = getattr(args, "since", None)
    try:
        page = await world.list_runs(status=args.status, workflow_name=args.workflow,
                                     limit=args.limit, cursor=args.cursor or None,
                                     tags=tags or None,
                                     since=None if since is None else since_time(
                                         since, world.now()))
    except ValueError as exc:  # a cursor this world did not hand out
        raise UsageError(str(exc)) from exc
    # step counts come with the run rows (no list_steps per run); only a running
    # run's log is read, for its sub-status
    summaries = [{**shapes.run_summary(run), "waiting": await run_waiting(world, run)}
                 for run in page.items]
    if args.json:
        print_json({"runs": summaries, "next_cursor": page.next_cursor})
        return
    table = Table(title=None, header_style="bold")
    with_tags = any(run["tags"] for run in summaries)
    for column in ("run id", "workflow", "status", "started (UTC)", "duration", "steps",
                   *(("tags",) if with_tags else ())):
        table.add_column(column, overflow="fold")
    for run in summaries:
        counts = run["step_counts"]
        steps = f"{counts['completed']}/{counts['total']}"
        if counts["failed"]:
            steps += f" ({counts['failed']} failed)"
        status = status_text(run["status"])
        if run["waiting"] is not None:
            status.append(f" ({run['waiting']['label']})")
        table.add_row(Text(run["run_id"]), Text(run["workflow_name"]), status,
                      format_time(run["started_at"]), format_duration(run["duration_ms"]), steps,
                      *((Text(tags_text(run["tags"])),) if with_tags else ()))
    if summaries:
        console.print(table)
    else:
        console.print("no runs")
    if page.next_cursor is not None:
        console.print(Text(f"next cursor: {page.next_cursor}"))


async def _run_detail(world: World, args: argparse.Namespace, console: Console) -> None:
    run = await _run(world, args.run_id)
    events = await world.list_events(run.run_id)
    detail = shapes.run_detail(run, await world.list_steps(run.run_id), events)
    detail["waiting"] = waiting_for(run, events)
    if args.json:
        print_json(detail)
        return
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column(overflow="fold")
    fields.add_row("run", Text(detail["run_id"]))
    fields.add_row("workflow", Text(detail["workflow_name"]))
    fields.add_row("status", status_text(detail["status"]))
    if detail["waiting"] is not None:
        fields.add_row("waiting", Text(waiting_text(detail["waiting"])))
    fields.add_row("queue", Text(detail["queue"]))
    if detail["tags"]:
        fields.add_row("tags", Text(tags_text(detail["tags"])))
    if detail["parent_run_id"] is not None:
        fields.add_row("parent", Text(detail["parent_run_id"]))
    if detail["children"]:
        fields.add_row("children", Text(", ".join(c["run_id"] for c in detail["children"])))
    fields.add_row("created", format_time(detail["created_at"]))
    fields.add_row("started", format_time(detail["started_at"]))
    fields.add_row("completed", format_time(detail["completed_at"]))
    fields.add_row("duration", format_duration(detail["duration_ms"]))
    fields.add_row("input", Text(compact_value(detail["input"])))
    if detail["status"] == "completed":
        fields.add_row("output", Text(compact_value(detail["output"])))
    error = detail["error"]
    if error is not None:
        fields.add_row("error", Text(f"{error['type']}: {error['message']}", style="red"))
    console.print(fields)
    if error is not None and error.get("traceback"):
        console.print(Text(user_traceback(error), style="dim"))
    if detail["steps"]:
        console.print()
        print_steps(detail["steps"], console)


# -- inspect steps / events / hooks ----------------------------------------------------
async def inspect_steps(world: World, args: argparse.Namespace, console: Console) -> None:
    run = await _run(world, args.run_id)
    retries = shapes.retries_by_step(await world.list_events(run.run_id))
    steps = [shapes.step_dict(step, retries.get(step.correlation_id, []))
             for step in await world.list_steps(run.run_id)]
    if args.json:
        print_json({"run_id": run.run_id, "steps": steps})
    elif steps:
        print_steps(steps, console)
    else:
        console.print("no steps")


async def inspect_events(world: World, args: argparse.Namespace, console: Console) -> None:
    run = await _run(world, args.run_id)
    events = [shapes.event_dict(record) for record in await world.list_events(run.run_id)]
    if args.json:
        print_json({"run_id": run.run_id, "events": events})
        return
    table = Table(header_style="bold")
    for column in ("seq", "time (UTC)", "type", "#", "details"):
        table.add_column(column, overflow="fold")
    for event in events:
        table.add_row(str(event["seq"]), event["created_at"][11:23], Text(event["type"]),
                      Text(event["correlation_id"] or ""), Text(event_details(event)))
    console.print(table)


async def inspect_hooks(world: World, args: argparse.Namespace, console: Console) -> None:
    if args.run is not None:
        await _run(world, args.run)
    records = await world.list_hooks(args.run)
    counts: dict[str, dict[str, int]] = {}
    for run_id in dict.fromkeys(hook.run_id for hook in records):
        try:
            counts.update(shapes.hook_payload_counts(await world.list_events(run_id)))
        except CorruptRecordError:
            pass  # its counts are unknown; the hooks are listed all the same
    hooks = [{**shapes.hook_dict(hook), **counts.get(hook.token, shapes.NO_PAYLOADS)}
             for hook in records]
    if args.json:
        print_json({"hooks": hooks})
        return
    if not hooks:
        console.print("no hooks")
        return
    table = Table(header_style="bold")
    for column in ("token", "run id", "#", "status", "payloads", "created (UTC)",
                   "disposed (UTC)"):
        table.add_column(column, overflow="fold")
    for hook in hooks:
        payloads = str(hook["received"])
        if hook["rejected"]:
            payloads += f" ({hook['rejected']} rejected)"
        table.add_row(Text(hook["token"]), Text(hook["run_id"]), Text(hook["correlation_id"]),
                      status_text(hook["status"]), payloads, format_time(hook["created_at"]),
                      format_time(hook["disposed_at"]))
    console.print(table)


# -- inspect streams --------------------------------------------------------------------
async def inspect_streams(world: World, args: argparse.Namespace, console: Console) -> None:
    run = await _run(world, args.run_id)
    if args.name is None:
        streams = [shapes.stream_dict(*row) for row in await world.list_streams(run.run_id)]
        if args.json:
            print_json({"run_id": run.run_id, "streams": streams})
            return
        table = Table(header_style="bold")
        for column in ("stream", "chunks", "closed"):
            table.add_column(column, overflow="fold")
        for stream in streams:
            table.add_row(Text(shapes.shown_name(stream["name"])), str(stream["chunks"]),
                          "yes" if stream["closed"] else "no")
        console.print(table if streams else "no streams")
        return
    names = {row[0] for row in await world.list_streams(run.run_id)}
    if args.name not in names and not args.follow:
        raise NotFound(f"stream not found: {args.name} (run {run.run_id})")
    collected: list[dict[str, Any]] = []

    def emit(chunk: dict[str, Any]) -> None:
        if not args.follow and args.json:
            collected.append(chunk)
        elif args.json:
            print_json(chunk, indent=None)
        else:
            sys.stdout.write(f"{chunk['index']}\t{shapes.chunk_text(chunk)}\n")
            sys.stdout.flush()

    closed = await _read_stream(world, run.run_id, args.name, emit, follow=args.follow)
    if not args.follow and args.json:
        print_json({"run_id": run.run_id, "name": args.name, "closed": closed,
                    "chunks": collected})


async def _read_stream(world: World, run_id: str, name: str, emit: Any, *,
                       follow: bool) -> bool:
    """Emit the stream's chunks in order, a page at a time; with `follow`, keep reading
    until the stream is closed or its run has ended. Returns whether it is closed."""
    index = 0
    while True:
        chunks, closed = await world.read_stream(run_id, name, index)
        for chunk in chunks:
            emit(shapes.chunk_dict(chunk))
            index = chunk.index + 1
        if chunks:
            continue
        if closed or not follow:
            return closed
        run = await world.get_run(run_id)
        if run is not None and run.status.is_terminal:
            chunks, closed = await world.read_stream(run_id, name, index)
            if not chunks:
                return closed
            continue
        # another process writes the stream, so in-process wake-ups cannot be relied on
        await anyio.sleep(FOLLOW_POLL_SECONDS)


# -- runs cancel / retry ----------------------------------------------------------------
async def runs_cancel(world: World, args: argparse.Namespace, console: Console) -> None:
    run = await _run(world, args.run_id)
    requested = await world.request_cancel(run.run_id)
    if args.json:
        print_json({"run_id": run.run_id, "cancel_requested": requested,
                    "status": run.status.value})
    elif requested:
        console.print(Text(f"cancel requested for run {run.run_id}; it ends cancelled when a "
                           f"worker of the world processes it"))
    else:
        console.print(Text(f"run {run.run_id} has already ended ({run.status.value})"))


async def runs_retry(world: World, args: argparse.Namespace, console: Console) -> None:
    from worldflow.core.api import retry_run

    new = await retry_run(args.run_id, world=world)
    if args.json:
        print_json({"run_id": args.run_id, "new_run_id": new.run_id})
    else:
        console.print(Text(f"run {args.run_id} retried as {new.run_id}; completed steps are "
                           f"replayed from the log, the rest runs when a worker picks it up"))


async def runs_send(world: World, args: argparse.Namespace, console: Console) -> None:
    from worldflow.core.messages import send

    try:
        message = json.loads(args.message)
    except ValueError as exc:
        raise UsageError(f"--json is not valid JSON: {exc}") from None
    await send(args.run_id, message, topic=args.topic, world=world)
    print_json({"run_id": args.run_id, "topic": args.topic, "sent": True})


COMMANDS = {
    ("inspect", "runs"): inspect_runs,
    ("inspect", "steps"): inspect_steps,
    ("inspect", "events"): inspect_events,
    ("inspect", "hooks"): inspect_hooks,
    ("inspect", "streams"): inspect_streams,
    ("runs", "cancel"): runs_cancel,
    ("runs", "retry"): runs_retry,
    ("runs", "send"): runs_send,
}
