from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import sqlite3
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytest

from worldflow.worlds import create_world

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

WORLD_NAMES = ["memory", "sqlite", "postgres"]
PG_ADMIN_URL = os.environ.get("WORLDFLOW_TEST_PG_ADMIN", "postgresql://root@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this test session, dropped at the end."""
    import asyncpg

    name = f"worldflow_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def admin_async(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def admin(sql: str) -> None:
        # its own thread and loop: this fixture may be set up from inside a running loop
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, admin_async(sql)).result()

    admin(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_world(name: str, tmp_path: Path, request: pytest.FixtureRequest, **options: Any) -> Any:
    if name == "memory":
        return create_world("memory", **options)
    if name == "sqlite":
        return create_world("sqlite", path=str(tmp_path / "worldflow.db"), **options)
    url = request.getfixturevalue("postgres_url")
    # each test gets its own job prefix, so that tests never see each other's queue jobs
    prefix = "t" + uuid.uuid4().hex[:10]
    return create_world("postgres", connection_string=url, job_prefix=prefix, **options)


@pytest.fixture(params=WORLD_NAMES)
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A started world (the engine processes its queue), one per world kind."""
    w = make_world(request.param, tmp_path, request, queue_concurrency=50)
    async with w:
        yield w


@pytest.fixture(params=["memory", "sqlite"])
async def local_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A started world of this process only (memory, SQLite): for engine behaviour that
    does not depend on the world."""
    w = make_world(request.param, tmp_path, request, queue_concurrency=20)
    async with w:
        yield w


@pytest.fixture(params=WORLD_NAMES)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """An opened world with no engine: for tests of the World protocol itself."""
    w = make_world(request.param, tmp_path, request)
    await w.open()
    try:
        yield w
    finally:
        await w.close()


@pytest.fixture
async def memory_world() -> AsyncIterator[Any]:
    w = create_world("memory", queue_concurrency=50)
    async with w:
        yield w


_NUMBERED_PLACEHOLDER = re.compile(r"\?\d")


class _CheckedConnection(sqlite3.Connection):
    """A sqlite3 connection that refuses what Python 3.14 refuses: numbered placeholders
    (`?1`) bound from a sequence (deprecated since 3.12; they must come from a mapping).
    Python 3.11 accepts it silently, so without this the suite would not see it."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        _check_placeholders(sql, parameters)
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        rows = list(parameters)
        for row in rows[:1]:
            _check_placeholders(sql, row)
        return super().executemany(sql, rows)


def _check_placeholders(sql: str, parameters: Any) -> None:
    if _NUMBERED_PLACEHOLDER.search(sql) and not isinstance(parameters, Mapping):
        raise sqlite3.ProgrammingError(
            f"numbered placeholders bound from a sequence (refused by Python 3.14): {sql}")


@pytest.fixture(autouse=True, scope="session")
def _sqlite_placeholders_checked() -> Iterator[None]:
    """Every SQLite connection the tests open checks how its statements are bound."""
    connect = sqlite3.connect

    def checked_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", _CheckedConnection)
        return connect(*args, **kwargs)

    sqlite3.connect = checked_connect  # type: ignore[assignment]
    try:
        yield
    finally:
        sqlite3.connect = connect
