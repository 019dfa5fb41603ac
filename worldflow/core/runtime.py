"""The runtime: which engine serves which world in this process, and the default world.

`async with world:` (or `await world.start()`) opens the world's storage and starts an
`Engine` for it in the running event loop; `await world.close()` stops the engine, then
closes the storage. If the event loop ends first (an `asyncio.run()` that returns
without closing its worlds), the engine notices its own cancellation and closes the
world's storage on the way out, so no connection or driver thread outlives the loop.

The default world (what `start()`, `get_run()`, ... use without `world=`) belongs to
one event loop: it is created by the factory the package hands in
(`worldflow.create_world`, reading the environment) on first use in a loop, or is the
first world started in that loop. A second `asyncio.run()` gets a fresh one.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

from worldflow.core.engine import Engine

if TYPE_CHECKING:
    from collections.abc import Callable

    from worldflow.core.world import World

__all__ = [
    "default_world",
    "engine_for",
    "get_world",
    "set_default_world",
    "set_default_world_factory",
    "start_engine",
    "stop_engine",
]

_engines: weakref.WeakKeyDictionary[World, Engine] = weakref.WeakKeyDictionary()
_factory: Callable[[], World] | None = None
_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, World] = (
    weakref.WeakKeyDictionary())
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary())


def set_default_world_factory(factory: Callable[[], World] | None) -> None:
    """Set how the default world is made (the package sets `create_world`)."""
    global _factory
    _factory = factory


def engine_for(world: World) -> Engine | None:
    """The engine working on `world`'s queue in this process (None: not started here)."""
    return _engines.get(world)


async def start_engine(world: World, *, keep_alive: float) -> Engine:
    """Start the engine of `world` in the running loop (once); the first world started
    in a loop becomes its default world."""
    engine = _engines.get(world)
    if engine is not None and not engine.finished:
        return engine
    engine = Engine(world, keep_alive=keep_alive)
    _engines[world] = engine
    try:
        await engine.start()
    except BaseException:
        _engines.pop(world, None)
        raise
    if default_world() is None:
        set_default_world(world)
    return engine


async def stop_engine(world: World) -> None:
    """Stop the engine of `world` (its runs go back to the queue) and forget it."""
    engine = _engines.pop(world, None)
    if engine is not None:
        await engine.stop()
    _forget_default(world)


def _forget_default(world: World) -> None:
    for loop, default in list(_defaults.items()):
        if default is world:
            _defaults.pop(loop, None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def default_world() -> World | None:
    """The default world of the running event loop, if one is set."""
    loop = _running_loop()
    return None if loop is None else _defaults.get(loop)


def set_default_world(world: World | None) -> None:
    """Make `world` the default world of the running event loop (None: unset)."""
    loop = _running_loop()
    if loop is None:
        raise RuntimeError("set_default_world() needs a running event loop")
    if world is None:
        _defaults.pop(loop, None)
    else:
        _defaults[loop] = world


async def get_world(world: World | None = None) -> World:
    """`world`, or the running loop's default world: created by the factory and started
    on first use."""
    if world is not None:
        return world
    loop = asyncio.get_running_loop()
    existing = _defaults.get(loop)
    if existing is not None:
        return existing
    lock = _locks.get(loop)
    if lock is None:
        lock = _locks[loop] = asyncio.Lock()
    async with lock:
        existing = _defaults.get(loop)
        if existing is not None:
            return existing
        if _factory is None:
            raise RuntimeError("no default world: pass world=..., or import worldflow "
                               "(which sets create_world as the default-world factory)")
        created = _factory()
        await created.start()
        _defaults[loop] = created
        return created
