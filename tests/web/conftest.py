from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.cli import flows
from tests.cli.fixtures import many_runs_db, populated_db, populated_postgres, scratch_db
from worldflow import create_world
from worldflow.cli.web import app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "client", "many_runs_db", "populated_db", "populated_postgres", "scratch_db", "ui_world",
]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def ui_world(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A world holding `flows.populate()`'s runs: a memory world populated here (still
    started), or the shared SQLite file or Postgres database opened for reading (as the
    CLI opens them)."""
    if request.param == "memory":
        async with create_world("memory") as world:
            await flows.populate(world)
            yield world
        return
    if request.param == "sqlite":
        world = create_world("sqlite", path=request.getfixturevalue("populated_db"))
    else:
        world = create_world("postgres",
                              connection_string=request.getfixturevalue("populated_postgres"))
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
