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

import asyncio
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

import anyio

from worldflow.cli.errors import CliError, NotFound, UsageError
from worldflow.cli.inspect import COMMANDS
from worldflow.cli.parser import BACKENDS as BACKENDS
from worldflow.cli.parser import MAX_LIMIT as MAX_LIMIT
from worldflow.cli.parser import RUN_STATUSES as RUN_STATUSES
from worldflow.cli.parser import build_parser
from worldflow.cli.schedules import SCHEDULE_COMMANDS
from worldflow.cli.world import DEFAULT_SQLITE_PATH as DEFAULT_SQLITE_PATH
from worldflow.cli.world import OPEN_TIMEOUT_SECONDS, open_world, resolve_world
from worldflow.cli.world import redact_url as redact_url
from worldflow.errors import (
    HookNotFoundError,
    RunFinishedError,
    RunNotFoundError,
    ScheduleNotFoundError,
    WorldError,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Coroutine, Sequence

__all__ = ["build_parser", "main"]
# names that moved to cli/parser.py and cli/world.py are imported above "as" themselves:
# they were defined here, and stay importable from here


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
