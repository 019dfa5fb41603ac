"""The world a command names: which one (options, then the environment), opening it
with a time limit, and naming it in one-line errors without its password.

Apart from `main` because every command that touches storage goes through it, and its
duties (a read-only SQLite mount, a driver error quoting the connection string) have
nothing to do with parsing or dispatching commands.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio

from worldflow.cli.errors import CliError
from worldflow.errors import WorldError

if TYPE_CHECKING:
    import argparse

    from worldflow.core.world import World

__all__ = ["DEFAULT_SQLITE_PATH", "OPEN_TIMEOUT_SECONDS", "open_world", "redact_url",
           "resolve_world"]

DEFAULT_SQLITE_PATH = ".worldflow/worldflow.db"
#: opening a world that cannot be reached gives up after this many seconds
OPEN_TIMEOUT_SECONDS = 15.0


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
