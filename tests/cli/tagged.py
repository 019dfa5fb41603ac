"""Tagged runs for the listing tests of the CLI and the web UI, and a world wrapper that
counts the calls made to it."""

from __future__ import annotations

import collections
import os
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from tests.cli import flows
from tests.cli.fixtures import PG_ADMIN_URL, _admin
from tests.cli.helpers import run_async
from worldflow import RunFailedError, StepFailedError, create_world, start

if TYPE_CHECKING:
    from collections.abc import Iterator

    from worldflow.core.world import World

OPS_PROD = "tag-ops-prod"
OPS_DEV = "tag-ops-dev"
BILLING = "tag-billing"  # its order fails: one failed step
UNTAGGED = "tag-none"


async def populate_tagged(world: World) -> None:
    await (await start(flows.noop, 1, world=world, run_id=UNTAGGED)).result()
    failed = await start(flows.order, 7, world=world, run_id=BILLING,
                         tags={"team": "billing"})
    try:
        await failed.result()
    except (StepFailedError, RunFailedError):
        pass
    await (await start(flows.noop, 2, world=world, run_id=OPS_DEV,
                       tags={"team": "ops", "env": "dev"})).result()
    await (await start(flows.noop, 3, world=world, run_id=OPS_PROD,
                       tags={"team": "ops", "env": "prod"})).result()


async def populate_tagged_file(path: str) -> None:
    async with create_world("sqlite", path=path) as world:
        await populate_tagged(world)


async def populate_tagged_postgres(url: str) -> None:
    async with create_world("postgres", connection_string=url) as world:
        await populate_tagged(world)


@pytest.fixture(scope="session")
def tagged_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file holding `populate_tagged()`'s runs; tests must not change it."""
    path = str(tmp_path_factory.mktemp("cli-tags") / "worldflow.db")
    run_async(populate_tagged_file, path)
    return path


@pytest.fixture(scope="session")
def tagged_postgres() -> Iterator[str]:
    """A database of its own holding `populate_tagged()`'s runs; dropped at the end."""
    name = f"worldflow_tags_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    run_async(_admin, f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        run_async(populate_tagged_postgres, url)
        yield url
    finally:
        run_async(_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class CountingWorld:
    """Passes every call to `world` and counts them by method name."""

    def __init__(self, world: Any) -> None:
        self._world = world
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._world, name)
        if not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return value(*args, **kwargs)

        return counted
