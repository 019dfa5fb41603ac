"""The `worldflow` command's argument parser: its subcommands, their options and help.

Apart from `main` because what the command accepts (and says in ``--help``) is read and
changed on its own, without the code that opens the world and runs the command.
Subcommands with a module of their own (``schedules``, ``check-replay``, ``start``) add
their parsers from there. `tag_filter` is here too: what ``--tag`` options mean, checked
when ``inspect runs`` runs (a bad one is exit status 1, not argparse's 2).
"""

from __future__ import annotations

import argparse
import os
from typing import Any, NoReturn

from worldflow.cli.errors import CliError
from worldflow.cli.schedules import add_schedules_parser
from worldflow.cli.times import Since, parse_since
from worldflow.core.listing import parse_tag

__all__ = ["BACKENDS", "MAX_LIMIT", "RUN_STATUSES", "build_parser", "tag_filter"]

BACKENDS = ("memory", "sqlite", "postgres")
RUN_STATUSES = ("pending", "running", "completed", "failed", "cancelled", "continued")
MAX_LIMIT = 1000


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Bad usage: one line naming the command, exit status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}, got {value}")
    return value


def _since(text: str) -> Since:
    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


def _world_options(parser: argparse.ArgumentParser, default: Any) -> None:
    group = parser.add_argument_group("world (default: from the environment)")
    group.add_argument("--backend", choices=BACKENDS, default=default,
                       help="the world to open (WORKFLOW_TARGET_WORLD)")
    group.add_argument("--path", default=default,
                       help="SQLite file (WORKFLOW_SQLITE_PATH; implies --backend sqlite)")
    group.add_argument("--url", default=default,
                       help="Postgres URL (WORKFLOW_POSTGRES_URL; implies --backend postgres)")
    group.add_argument("--debug", action="store_true", default=default,
                       help="print tracebacks of errors")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("worldflow")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="worldflow", description="Inspect and operate worldflow worlds.")
    parser.add_argument("--version", action="version", version=f"worldflow {_version()}")
    _world_options(parser, None)
    # the same options are accepted after the command; SUPPRESS keeps the earlier value
    common = _Parser(add_help=False)
    _world_options(common, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser("inspect", help="show runs, steps, events, hooks, streams")
    what = inspect.add_subparsers(dest="what", required=True, metavar="WHAT")
    runs = what.add_parser("runs", parents=[common], help="list runs, or show one run")
    runs.add_argument("run_id", nargs="?", metavar="RUN_ID")
    runs.add_argument("--status", choices=RUN_STATUSES)
    runs.add_argument("--workflow", metavar="NAME", help="only runs of this workflow")
    runs.add_argument("--limit", type=_positive_limit, default=50, help="runs per page")
    runs.add_argument("--cursor", help="the next cursor printed by the previous page")
    runs.add_argument("--tag", action="append", metavar="KEY=VALUE",
                      help="only runs with this tag (repeat: runs with every one)")
    runs.add_argument("--since", type=_since, metavar="TIME|AGE",
                      help="only runs created at or after TIME (ISO 8601, UTC unless it "
                           "names a zone) or in the last AGE (15m, 2h, 3d)")
    runs.add_argument("--json", action="store_true",
                      help="print JSON (shapes: the docstring of worldflow.cli.inspect)")
    runs.add_argument("--web", action="store_true", help="serve the web UI instead")
    runs.add_argument("--port", type=_port, default=3456, help="web UI port (default 3456)")
    runs.add_argument("--host", default="127.0.0.1",
                      help="web UI address (default 127.0.0.1; others need --auth-token)")
    runs.add_argument("--auth-token", default=os.environ.get("WORLDFLOW_UI_TOKEN"),
                      help="token the web UI requires (Bearer or ?token= once; default "
                           "$WORLDFLOW_UI_TOKEN)")
    for name, text in (("steps", "a run's steps"), ("events", "a run's event log")):
        sub = what.add_parser(name, parents=[common], help=text)
        sub.add_argument("run_id", metavar="RUN_ID")
        sub.add_argument("--json", action="store_true")
    hooks = what.add_parser("hooks", parents=[common], help="hooks and their tokens' state")
    hooks.add_argument("--run", metavar="RUN_ID", help="only this run's hooks")
    hooks.add_argument("--json", action="store_true")
    streams = what.add_parser("streams", parents=[common], help="a run's streams or chunks")
    streams.add_argument("run_id", metavar="RUN_ID")
    streams.add_argument("name", nargs="?", metavar="NAME", help="print this stream's chunks")
    streams.add_argument("--follow", action="store_true", help="wait for chunks until closed")
    streams.add_argument("--json", action="store_true")

    runs_cmd = commands.add_parser("runs", help="cancel, retry or message a run")
    action = runs_cmd.add_subparsers(dest="what", required=True, metavar="ACTION")
    for name, text in (("cancel", "ask a run to stop"),
                       ("retry", "start a failed run again from its log")):
        sub = action.add_parser(name, parents=[common], help=text)
        sub.add_argument("run_id", metavar="RUN_ID")
        sub.add_argument("--json", action="store_true")
    send = action.add_parser("send", parents=[common],
                             help="send a message (JSON) to a run; receive() gets it")
    send.add_argument("run_id", metavar="RUN_ID")
    send.add_argument("--topic", default="default", help="the message's topic")
    send.add_argument("--json", dest="message", required=True, metavar="MESSAGE",
                      help="the message, as JSON")

    add_schedules_parser(commands, common)

    doctor = commands.add_parser(
        "doctor", parents=[common],
        help="check the world: schema, clock skew, leases, dead workers, stuck runs")
    doctor.add_argument("--stuck-minutes", type=float, default=30.0, metavar="N",
                        help="a run pending longer than this is reported (default 30)")
    doctor.add_argument("--json", action="store_true")
    setup = commands.add_parser("postgres-setup", parents=[common],
                                help="create the Postgres world's tables")
    setup.add_argument("--job-prefix", help="queue job prefix (WORKFLOW_POSTGRES_JOB_PREFIX)")
    serve = commands.add_parser("serve", parents=[common],
                                help="serve the HTTP transport and work on the queue")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=3001)
    serve.add_argument("--import", dest="imports", action="append", default=[],
                       metavar="MODULE", help="a module defining workflows (repeatable)")
    from worldflow.cli.check_replay import add_parser as add_check_replay

    add_check_replay(commands, common, RUN_STATUSES)
    from worldflow.cli.start import add_parser as add_start_parser

    add_start_parser(commands, common)
    return parser


def tag_filter(texts: list[str]) -> dict[str, str]:
    """``--tag KEY=VALUE`` options as a dict; `CliError` (status 1) naming a bad one."""
    tags: dict[str, str] = {}
    for text in texts:
        try:
            key, value = parse_tag(text)
        except ValueError as exc:
            raise CliError(f"--tag: {exc}") from None
        if tags.get(key, value) != value:
            raise CliError(f"--tag: {key!r} is given twice with different values "
                           f"({tags[key]!r} and {value!r}); a run has one value per key")
        tags[key] = value
    return tags
