"""Storage worlds: the `World` protocol and `create_world()`."""

from __future__ import annotations

import importlib
import os
from typing import Any

from worldflow.core.world import BaseWorld, World

__all__ = ["BaseWorld", "World", "create_world"]

WORLD_NAMES = ("memory", "sqlite", "postgres")


def create_world(target: str | None = None, **options: Any) -> World:
    """Create a world (not yet started) from `target` or the environment.

    `target` (default: ``WORKFLOW_TARGET_WORLD``, else ``sqlite``) is ``memory``,
    ``sqlite``, ``postgres`` or ``package.module:factory`` (a callable taking the
    options). Options not given are read from the environment:
    ``WORKFLOW_SQLITE_PATH`` (`path`), ``WORKFLOW_POSTGRES_URL`` / ``DATABASE_URL``
    (`connection_string`), ``WORKFLOW_POSTGRES_JOB_PREFIX`` (`job_prefix`),
    ``WORKFLOW_POSTGRES_WORKER_CONCURRENCY`` (`queue_concurrency`),
    ``WORKFLOW_POSTGRES_WRITERS`` (`writers`).
    """
    from_env = not target and bool(os.environ.get("WORKFLOW_TARGET_WORLD"))
    target = target or os.environ.get("WORKFLOW_TARGET_WORLD") or "sqlite"
    if target == "memory":
        from worldflow.worlds.memory import MemoryWorld

        return MemoryWorld(**options)
    if target == "sqlite":
        from worldflow.worlds.sqlite import SQLiteWorld

        options.setdefault("path", os.environ.get("WORKFLOW_SQLITE_PATH")
                           or ".worldflow/worldflow.db")
        return SQLiteWorld(**options)
    if target == "postgres":
        from worldflow.worlds.postgres import PostgresWorld

        url = os.environ.get("WORKFLOW_POSTGRES_URL") or os.environ.get("DATABASE_URL")
        if url and "connection_string" not in options:
            options["connection_string"] = url
        if "job_prefix" not in options and os.environ.get("WORKFLOW_POSTGRES_JOB_PREFIX"):
            options["job_prefix"] = os.environ["WORKFLOW_POSTGRES_JOB_PREFIX"]
        _int_from_env(options, "queue_concurrency", "WORKFLOW_POSTGRES_WORKER_CONCURRENCY",
                      "a positive integer")
        _int_from_env(options, "writers", "WORKFLOW_POSTGRES_WRITERS",
                      "an integer from 1 to 8")
        return PostgresWorld(**options)
    where = (f"WORKFLOW_TARGET_WORLD={target}" if from_env
             else f"create_world({target!r})")
    if ":" in target:
        return _from_factory(target, where, options)
    raise ValueError(f"{where}: unknown world; valid worlds: {', '.join(WORLD_NAMES)}, "
                     f"or 'package.module:factory'")


def _from_factory(target: str, where: str, options: dict[str, Any]) -> World:
    """The world made by the factory `target` names; a ValueError saying `where` the
    target came from (the variable or the call) if it cannot be loaded or makes no world."""
    module_name, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"{where}: cannot load world factory: "
                         f"{type(exc).__name__}: {exc}") from None
    if not callable(factory):
        raise ValueError(f"{where}: {target} is a {type(factory).__name__}, not a "
                         f"factory (a callable that returns a world)")
    try:
        world = factory(**options)
    except TypeError as exc:
        raise ValueError(f"{where}: calling the world factory failed: {exc}") from None
    if not isinstance(world, World):
        raise ValueError(f"{where}: the factory returned a {type(world).__name__}, not a "
                         f"world (a worldflow.worlds.World, e.g. a BaseWorld subclass)")
    return world


def _int_from_env(options: dict[str, Any], option: str, variable: str, expected: str) -> None:
    """Set `option` from the integer in environment variable `variable`, unless given."""
    text = os.environ.get(variable)
    if not text or option in options:
        return
    try:
        options[option] = int(text)
    except ValueError:
        raise ValueError(f"{variable} must be {expected}, got {text!r}") from None
