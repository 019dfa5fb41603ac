"""The `worldflow` command.

    worldflow [--backend memory|sqlite|postgres] [--path FILE] [--url URL] [--debug] COMMAND

    inspect runs [RUN_ID] [--status S] [--workflow NAME] [--tag K=V]... [--since T]
                 [--limit N] [--cursor C] [--json]
    inspect runs --web [--port 3456]       the web UI on http://127.0.0.1:PORT/
    inspect steps RUN_ID | events RUN_ID | hooks [--run RUN_ID] | streams RUN_ID [NAME]
    runs cancel RUN_ID | runs retry RUN_ID | runs send RUN_ID [--topic T] --json MESSAGE
    schedules list | schedules pause|resume|delete|trigger SCHEDULE_ID   cron schedules
    postgres-setup [--url URL] [--job-prefix P]
    doctor [--stuck-minutes 30] [--json]   schema, clock skew, leases, dead workers, stuck runs
    serve [--port 3001] [--import MODULE]  the HTTP transport, working on the queue
    check-replay --import MODULE [--status S] [--workflow NAME] [--json]
                                           replay runs against new code (exit 1: some fail)
    start WORKFLOW --import MODULE [--json ARGS] [--kwargs OBJ] [--run-id ID] [--wait]
                   [--output json]         start a run (cli/start.py)

The world comes from the same environment variables as the library
(``WORKFLOW_TARGET_WORLD``, ``WORKFLOW_SQLITE_PATH``, ``WORKFLOW_POSTGRES_URL``, ...);
``--backend``, ``--path`` and ``--url`` override them for one command (``--path`` alone
means sqlite, ``--url`` alone postgres). Inspecting only opens the world's storage: it
never runs workflows. Exit status: 0 ok, 1 not found or failed, 2 bad usage; errors are
one line on stderr (``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import traceback
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import anyio

from worldflow.cli.errors import CliError
from worldflow.cli.inspect import COMMANDS, NotFound, UsageError
from worldflow.cli.schedules import SCHEDULE_COMMANDS, add_schedules_parser
from worldflow.cli.times import Since, parse_since
from worldflow.errors import (
    HookNotFoundError,
    RunFinishedError,
    RunNotFoundError,
    ScheduleNotFoundError,
    WorldError,
)

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

    from worldflow.core.world import World

__all__ = ["build_parser", "main"]

BACKENDS = ("memory", "sqlite", "postgres")
RUN_STATUSES = ("pending", "running", "completed", "failed", "cancelled", "continued")
DEFAULT_SQLITE_PATH = ".worldflow/worldflow.db"
#: opening a world that cannot be reached gives up after this many seconds
OPEN_TIMEOUT_SECONDS = 15.0
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


# -- the world --------------------------------------------------------------------------
def redact_url(url: str) -> str:
    """`url` without its password, to name a database in messages."""
    url = re.sub(r"(password\s*=\s*)\S+", r"\1***", url)
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparseable url>"


def resolve_world(args: argparse.Namespace) -> tuple[str, dict[str, Any], str]:
    """(target, options, label) of the world the command names; `label` says which world
    and where, for error messages."""
    target = args.backend
    if target is None:
        target = ("sqlite" if args.path else "postgres" if args.url
                  else os.environ.get("WORKFLOW_TARGET_WORLD") or "sqlite")
    if target == "sqlite":
        path = args.path or os.environ.get("WORKFLOW_SQLITE_PATH") or DEFAULT_SQLITE_PATH
        return target, {"path": path}, f"sqlite world at {os.path.abspath(path)}"
    if target == "postgres":
        url = args.url or os.environ.get("WORKFLOW_POSTGRES_URL") or os.environ.get(
            "DATABASE_URL")
        if not url:
            raise CliError("the postgres world needs a URL: --url or WORKFLOW_POSTGRES_URL", 2)
        return target, {"connection_string": url}, f"postgres world at {redact_url(url)}"
    if target == "memory":
        return target, {}, "memory world"
    return target, {}, f"world {target}"


async def open_world(args: argparse.Namespace, *, must_exist: bool = True) -> tuple[World, str]:
    """Create and open (storage only: no queue processing) the world of `args`."""
    from worldflow.worlds import create_world

    target, options, label = resolve_world(args)
    if must_exist and target == "sqlite" and not await anyio.Path(options["path"]).exists():
        raise CliError(f"{label}: no such file (set WORKFLOW_SQLITE_PATH or --path)")
    if must_exist and target == "sqlite" and not _writable(options["path"]):
        options["read_only"] = True  # e.g. a read-only mount: inspect it all the same
        label += " (read-only)"
    # a target from WORKFLOW_TARGET_WORLD is passed as such, so errors name the variable
    from_env = (args.backend is None and not args.path and not args.url
                and target == os.environ.get("WORKFLOW_TARGET_WORLD"))
    try:
        world = create_world(None if from_env else target, **options)
    except ImportError as exc:
        raise CliError(f"{label}: this world is not available: {exc}") from exc
    except ValueError as exc:
        raise CliError(str(exc), 2) from exc
    try:
        with anyio.fail_after(OPEN_TIMEOUT_SECONDS):
            await world.open()
    except TimeoutError as exc:
        await _close_quietly(world)
        raise CliError(f"{label}: not reachable within {OPEN_TIMEOUT_SECONDS:.0f}s") from exc
    except WorldError as exc:
        await _close_quietly(world)
        raise CliError(f"{label}: {_scrub(str(exc), options)}") from exc
    except Exception as exc:  # driver errors a world did not translate: still one line
        await _close_quietly(world)
        raise CliError(f"{label}: cannot open: {type(exc).__name__}: "
                       f"{_scrub(str(exc), options)}") from exc
    return world, label


def _writable(path: str) -> bool:
    """Whether SQLite could write the file (and its journal beside it): False on a
    read-only mount, even for root (access(2) answers EROFS)."""
    directory = os.path.dirname(os.path.abspath(path))
    return os.access(path, os.W_OK) and os.access(directory, os.W_OK)


def _scrub(message: str, options: dict[str, Any]) -> str:
    """`message` without the connection string's password, should a driver quote it."""
    url = options.get("connection_string")
    if not url:
        return message
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    message = message.replace(url, redact_url(url))
    return message.replace(password, "***") if password else message


async def _close_quietly(world: World) -> None:
    try:
        await world.close()
    except Exception:
        pass


# -- commands ---------------------------------------------------------------------------
async def run_command(args: argparse.Namespace) -> None:
    if args.command == "postgres-setup":
        await _postgres_setup(args)
        return
    if args.command == "serve":
        await _serve(args)
        return
    if args.command == "check-replay":
        await _check_replay(args)
        return
    if args.command == "start":
        await _start(args)
        return
    world, label = await open_world(args)
    try:
        if args.command == "inspect" and args.what == "runs" and args.web:
            from worldflow.cli.web.server import serve_web

            await serve_web(world, label, port=args.port, run_id=args.run_id,
                            host=args.host, auth_token=args.auth_token)
            return
        from rich.console import Console

        console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
        try:
            if args.command == "doctor":
                from worldflow.cli.doctor import doctor

                await doctor(world, args, console)
                return
            await {**COMMANDS, **SCHEDULE_COMMANDS}[args.command, args.what](world, args,
                                                                             console)
        except WorldError as exc:
            raise CliError(f"{label}: {exc}") from exc
    finally:
        await asyncio.shield(world.close())


async def _start(args: argparse.Namespace) -> None:
    from worldflow.cli.start import prepare, start_command

    what = prepare(args)
    if resolve_world(args)[0] == "memory" and not args.wait:
        raise CliError("a run started in the memory world is gone when this command ends: "
                       "add --wait, or use the sqlite or postgres world", 2)
    world, label = await open_world(args, must_exist=False)
    try:
        await start_command(world, args, what)
    except WorldError as exc:
        raise CliError(f"{label}: {exc}") from exc
    finally:
        await asyncio.shield(world.close())


async def _postgres_setup(args: argparse.Namespace) -> None:
    url = args.url or os.environ.get("WORKFLOW_POSTGRES_URL") or os.environ.get("DATABASE_URL")
    if not url:
        raise CliError("postgres-setup needs a URL: --url or WORKFLOW_POSTGRES_URL", 2)
    try:
        from worldflow.cli.postgres_setup import postgres_setup
    except ImportError as exc:
        raise CliError(f"postgres-setup is not available in this installation: {exc}") from exc
    prefix = args.job_prefix or os.environ.get("WORKFLOW_POSTGRES_JOB_PREFIX") or "worldflow"
    try:
        with anyio.fail_after(OPEN_TIMEOUT_SECONDS * 4):
            message = await postgres_setup(url, prefix)
    except WorldError as exc:
        raise CliError(f"postgres world at {redact_url(url)}: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise CliError(f"postgres world at {redact_url(url)}: cannot connect: "
                       f"{exc or type(exc).__name__}") from exc
    print(message)


async def _serve(args: argparse.Namespace) -> None:
    import importlib

    try:
        from worldflow.transports.http import serve
    except ImportError as exc:
        raise CliError(f"serve is not available in this installation: {exc}") from exc

    sys.path.insert(0, os.getcwd())  # so that --import finds the project's modules
    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise CliError(f"cannot import {module}: {exc}") from exc
    world, label = await open_world(args, must_exist=False)
    try:
        async with anyio.create_task_group() as tg:
            try:
                port = await tg.start(serve, world, args.host, args.port)
            except OSError as exc:
                raise CliError(f"cannot listen on {args.host}:{args.port}: "
                               f"{exc.strerror or exc}") from exc
            print(f"worldflow serving {label} on http://{args.host}:{port}/", flush=True)
    finally:
        await asyncio.shield(world.close())


async def _check_replay(args: argparse.Namespace) -> None:
    from worldflow.cli.check_replay import check_replay_command, import_modules

    import_modules(args.imports)  # first: a module that fails to import is exit status 2
    world, label = await open_world(args)
    try:
        try:
            await check_replay_command(world, args)
        except WorldError as exc:
            raise CliError(f"{label}: {exc}") from exc
    finally:
        await asyncio.shield(world.close())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `worldflow` command; returns its exit status."""
    args = build_parser().parse_args(argv)
    try:
        _run(run_command(args), worker=args.command == "serve")
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        code, message = _describe(exc)
        if args.debug:
            traceback.print_exc()
        prefix = "worldflow: error: " if code == 2 else "worldflow: "  # as argparse says it
        sys.stderr.write(f"{prefix}{message}\n")
        return code
    return 0


def _run(main: Coroutine[Any, Any, None], *, worker: bool) -> None:
    """Run the command's event loop: uvloop for `serve` (a long-lived worker whose
    loop overhead is per step and per request; `benchmarks/engine.py --uvloop`
    measures it), asyncio otherwise."""
    if worker:
        try:
            import uvloop
        except ImportError:  # not installed on this platform
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def _describe(exc: Exception) -> tuple[int, str]:
    """(exit status, one line) for an error that ended the command."""
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, UsageError):
        return 2, str(exc)
    if isinstance(exc, RunNotFoundError | HookNotFoundError | NotFound | RunFinishedError
                  | ScheduleNotFoundError):
        return 1, str(exc)
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return 1, f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
