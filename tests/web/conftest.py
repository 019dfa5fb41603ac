from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.cli import flows
from tests.cli.fixtures import many_runs_db, populated_db, populated_postgres, scratch_db
from worldflow import create_world
from worldflow.cli.web import app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = [
    "client", "many_runs_db", "populated_db", "populated_postgres", "scratch_db", "ui_world",
]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def ui_world(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A world holding `flows.populate()`'s runs: a memory world populated here (still
    started), or the shared SQLite file or Postgres database opened for reading (as the
    CLI opens them)."""
    async with populated_world(request, flows.populate, "populated_db",
                               "populated_postgres") as world:
        yield world


@contextlib.asynccontextmanager
async def populated_world(request: pytest.FixtureRequest,
                          populate: Callable[[Any], Awaitable[object]],
                          sqlite_fixture: str, postgres_fixture: str) -> AsyncIterator[Any]:
    """The world of `request.param`: a memory world that `populate` fills here (still
    started), or the SQLite file / Postgres database that the named fixtures filled,
    opened for reading (as the CLI opens them)."""
    if request.param == "memory":
        async with create_world("memory") as world:
            await populate(world)
            yield world
        return
    if request.param == "sqlite":
        world = create_world("sqlite", path=request.getfixturevalue(sqlite_fixture))
    else:
        world = create_world("postgres",
                             connection_string=request.getfixturevalue(postgres_fixture))
    await world.open()
    try:
        yield world
    finally:
        await world.close()


@pytest.fixture
async def client(ui_world: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app(ui_world))
    async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
        yield http
