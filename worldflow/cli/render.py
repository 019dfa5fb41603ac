"""How the CLI shows records to people: table cells, durations, statuses in colour,
a run's steps with their retries and tracebacks, one line per event, and JSON on stdout.

Apart from `worldflow.cli.inspect` because the same look is shared: the web UI uses
`format_duration` and `event_details`, ``doctor`` and ``schedules`` print their JSON
with `print_json`, while `inspect` is about what each command fetches from the world.
The JSON shapes themselves are built in `worldflow.cli.shapes`.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from worldflow.cli.tracebacks import user_frames

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "STATUS_STYLES",
    "compact_value",
    "event_details",
    "format_duration",
    "format_time",
    "print_json",
    "print_steps",
    "status_text",
    "tags_text",
    "user_traceback",
]

STATUS_STYLES = {"pending": "yellow", "running": "cyan", "completed": "green",
                 "corrupt": "bold red reverse", "failed": "bold red", "cancelled": "magenta",
                 "continued": "blue", "active": "cyan",
                 "disposed": "dim"}


def print_json(document: Any, *, indent: int | None = 2) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=indent) + "\n")
    sys.stdout.flush()


def format_duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m"


def format_time(value: str | None) -> str:
    """An ISO time as the tables show it (to the second, UTC); "-" for none."""
    return "-" if value is None else value[:19].replace("T", " ")


def status_text(value: str) -> Text:
    """A status in its colour (STATUS_STYLES)."""
    return Text(value, style=STATUS_STYLES.get(value, ""))


def compact_value(value: Any, limit: int | None = None) -> str:
    """A JSON value on one line, cut to `limit` characters if given."""
    text = json.dumps(value, ensure_ascii=False)
    if limit is not None and len(text) > limit:
        return text[:limit - 1] + "…"
    return text


def tags_text(tags: dict[str, str]) -> str:
    """Tags as `key=value` pairs, space-separated, in their order."""
    return " ".join(f"{key}={value}" for key, value in tags.items())


def event_details(event: dict[str, Any]) -> str:
    """One line saying what an event recorded (for tables and the web UI's log)."""
    data = event["data"]
    parts: list[str] = []
    if "step_name" in data:
        parts.append(f"{data['step_name']} attempt {data.get('attempt', '?')}")
    if "error" in data:
        parts.append(f"{data['error']['type']}: {data['error']['message']}")
    if "retry_at" in data:
        parts.append(f"retry at {format_time(data['retry_at'])}")
    if "resume_at" in data:
        parts.append(f"until {format_time(data['resume_at'])}")
    if "token" in data:
        parts.append(f"token {data['token']}")
    if "topics" in data:
        parts.append("topics " + ", ".join(data["topics"]))
    parts.extend(f"{key} {compact_value(data[key], 120)}"
                 for key in ("payload", "output", "workflow_name", "reason", "change_id")
                 if key in data)
    return "; ".join(parts)


def print_steps(steps: list[dict[str, Any]], console: Console) -> None:
    """The steps table of `inspect runs RUN_ID` and `inspect steps`."""
    table = Table(header_style="bold")
    for column in ("#", "step", "status", "attempts", "started (UTC)", "duration", "error"):
        table.add_column(column, overflow="fold")
    for step in steps:
        error = step["error"]
        table.add_row(Text(step["correlation_id"]), Text(step["step_name"]),
                      status_text(step["status"]), str(step["attempts"]),
                      format_time(step["started_at"]),
                      format_duration(step["duration_ms"]),
                      Text("" if error is None else f"{error['type']}: {error['message']}"))
    console.print(table)
    for step in steps:
        for retry in step["retries"]:
            error = retry["error"]
            console.print(Text(
                f"  {step['step_name']} #{step['correlation_id']}: attempt {retry['attempt']} "
                f"failed ({error['type']}: {error['message']}), retried after "
                f"{format_duration(retry['delay_ms'])}"))
    for step in steps:
        error = step["error"]
        if step["status"] == "failed" and error is not None and error.get("traceback"):
            console.print()
            console.print(Text(f"step {step['step_name']} #{step['correlation_id']} failed: "
                               f"{error['type']}: {error['message']}", style="red"))
            console.print(Text(user_traceback(error)))


def user_traceback(error: dict[str, Any]) -> str:
    """An error's traceback from the user's first frame (``--json`` has it whole)."""
    return (user_frames(error["traceback"]) or "").rstrip("\n")
