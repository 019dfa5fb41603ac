from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
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
