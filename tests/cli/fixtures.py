"""Fixtures shared by tests/cli and tests/web: SQLite files of real runs."""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.cli import flows
from tests.cli.helpers import run_async

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["many_runs_db", "populated_db", "populated_postgres", "scratch_db"]

PG_ADMIN_URL = os.environ.get("WORLDFLOW_TEST_PG_ADMIN",
                              "postgresql://root@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def populated_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file holding `flows.populate()`'s runs; tests must not change it."""
    path = str(tmp_path_factory.mktemp("cli") / "worldflow.db")
    run_async(flows.populate_file, path)
    return path


@pytest.fixture
def scratch_db(tmp_path: Path) -> str:
    """A populated SQLite file of this test's own, for commands that change runs."""
    path = str(tmp_path / "scratch.db")
    run_async(flows.populate_file, path)
    return path


@pytest.fixture(scope="session")
def many_runs_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file with 120 pending runs."""
    path = str(tmp_path_factory.mktemp("cli-many") / "worldflow.db")
    run_async(flows.add_pending_runs, path, 120)
    return path


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def populated_postgres() -> Iterator[str]:
    """A database of its own (other tests' runs would show in listings) holding
    `flows.populate()`'s runs; dropped at the end."""
    name = f"worldflow_ui_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    run_async(_admin, f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        run_async(flows.populate_postgres, url)
        yield url
    finally:
        run_async(_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
