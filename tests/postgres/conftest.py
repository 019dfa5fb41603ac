"""Fixtures of the Postgres tests that need a database, or an open world, of their own."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from worldflow import create_world


@pytest.fixture
async def own_db(postgres_url: str) -> Any:
    """A database of this test's own (the session's is shared with other tests)."""
    from tests.postgres.test_processes import drop_db, fresh_db

    url = await fresh_db(postgres_url)
    yield url
    await drop_db(url)


@pytest.fixture
async def opened(own_db: str) -> Any:
    """An open world (no engine) on the test's own database, and a connection to read
    it."""
    conn = await asyncpg.connect(own_db)
    world = create_world("postgres", connection_string=own_db,
                         job_prefix="t" + uuid.uuid4().hex[:8])
    await world.open()
    try:
        yield world, conn
    finally:
        await world.close()
        await conn.close()
