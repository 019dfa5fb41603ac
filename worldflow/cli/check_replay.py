"""`worldflow check-replay`: before a deploy, replay runs against the new code.

    worldflow check-replay --import app.workflows [--import ...] [--status S ...]
                           [--workflow NAME] [--json]

Imports the modules (the code about to be deployed), then replays the log of every
matching run against it with `check_runs`: no step body runs and nothing is written,
so it is safe against a live world. By default it checks the runs that the new code
would replay, `pending` and `running` (runs waiting on a sleep, hook or message are
`running`); `--status` (repeatable) picks others, e.g. `--status completed` to try the
code on finished runs' logs.

Prints a summary and, for each run that would fail, its workflow, run id, position, and
what the log records there against what the code does. Exit status: 0 every run
replays, 1 some would fail (a NonDeterminismError, a workflow that the modules do not
define, a log that cannot be read), 2 a module failed to import (the error is printed,
without a traceback unless `--debug`) or bad usage.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

from worldflow.cli.errors import CliError
from worldflow.core.check import ReplayResult, check_runs
from worldflow.errors import NonDeterminismError

if TYPE_CHECKING:
    import argparse

    from worldflow.core.records import RunRecord
    from worldflow.core.world import World

__all__ = ["add_parser", "check_replay_command"]

DEFAULT_STATUSES = ("pending", "running")
#: runs listed per page while collecting the runs to check
PAGE = 1000


def add_parser(commands: Any, common: argparse.ArgumentParser,
               statuses: tuple[str, ...]) -> None:
    """The `check-replay` subcommand's parser."""
    parser = commands.add_parser(
        "check-replay", parents=[common],
        help="replay runs against the code in --import modules; exit 1 if any would fail")
    parser.add_argument("--import", dest="imports", action="append", required=True,
                        metavar="MODULE", help="a module defining workflows (repeatable)")
    parser.add_argument("--status", dest="statuses", action="append", choices=statuses,
                        help="check runs of this status (repeatable; default: pending "
                             "and running)")
    parser.add_argument("--workflow", metavar="NAME", help="only runs of this workflow")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def import_modules(modules: list[str]) -> None:
    """Import the code to check; a module that fails to import is a CliError with exit
    status 2 naming it, its error and where it was raised."""
    sys.path.insert(0, os.getcwd())  # so that --import finds the project's modules
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # whatever the module raised: one line, no traceback wall
            raise CliError(f"cannot import {module}: {_one_line(exc)}{_where(exc)}", 2
                           ) from exc


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg}"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _where(exc: BaseException) -> str:
    """ (file:line) of the error in the user's code, if it is known."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" ({exc.filename}:{exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename]
    if not user or isinstance(exc, ModuleNotFoundError):
        return ""
    return f" ({user[-1].filename}:{user[-1].lineno})"


async def _matching_runs(world: World, statuses: list[str], workflow: str | None
                         ) -> list[RunRecord]:
    runs: list[RunRecord] = []
    for status in statuses:
        cursor: str | None = None
        while True:
            page = await world.list_runs(status=status, workflow_name=workflow, limit=PAGE,
                                         cursor=cursor)
            runs += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
    return runs


async def check_replay_command(world: World, args: argparse.Namespace) -> None:
    statuses = list(dict.fromkeys(args.statuses or DEFAULT_STATUSES))
    runs = await _matching_runs(world, statuses, args.workflow)
    results = await check_runs(world, runs)
    failures = [r for r in results if r.error is not None]
    if args.json:
        print(json.dumps({"checked": len(results), "passed": len(results) - len(failures),
                          "failed": len(failures), "statuses": statuses,
                          "workflow": args.workflow,
                          "failures": [_failure_dict(r) for r in failures]}, indent=2))
    else:
        which = " or ".join(statuses) + (f", workflow {args.workflow}" if args.workflow
                                         else "")
        print(f"checked {len(results)} run{'s' * (len(results) != 1)} ({which}) against "
              f"{', '.join(args.imports)}: {len(results) - len(failures)} replay, "
              f"{len(failures)} would fail")
        for result in failures:
            print(_failure_text(result))
    if failures:
        raise CliError(f"{len(failures)} of {len(results)} runs would fail to replay "
                       f"under this code", 1)


def _failure_dict(result: ReplayResult) -> dict[str, Any]:
    error = result.error
    assert error is not None
    data: dict[str, Any] = {"run_id": result.run_id, "workflow": result.workflow_name,
                            "status": result.status, "error_type": type(error).__name__,
                            "position": None, "expected": None, "found": None,
                            "message": str(error)}
    if isinstance(error, NonDeterminismError):
        data.update(position=error.position, expected=error.expected, found=error.found)
    return data


def _failure_text(result: ReplayResult) -> str:
    error = result.error
    head = f"FAIL {result.workflow_name} {result.run_id}"
    if isinstance(error, NonDeterminismError) and error.position is not None:
        return (f"{head}: at position {error.position} the log records {error.expected}, "
                f"the code has {error.found}")
    return f"{head}: {type(error).__name__}: {error}"
