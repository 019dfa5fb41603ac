"""Creating and upgrading the Postgres schema: numbered SQL files, a version table.

Setup is idempotent and safe to run from many processes at once (an advisory lock
serialises them). A database whose schema is newer than this code is refused, and
nothing in it is changed.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from worldflow.errors import SchemaError

if TYPE_CHECKING:
    import asyncpg

__all__ = ["SCHEMA_VERSION", "apply_migrations", "setup_schema"]

SCHEMA_VERSION = 7
MIGRATIONS = {1: "001_initial.sql", 2: "002_claims_and_hook_metadata.sql",
              3: "003_child_runs.sql", 4: "004_schedules.sql",
              5: "005_tags_and_counts.sql", 6: "006_leaner_writes.sql",
              7: "007_steps_from_events.sql"}
LOCK_KEY = 7_366_870_277  # pg_advisory_xact_lock key for worldflow's setup

CREATE_VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS worldflow_schema_version "
                        "(version integer NOT NULL, applied_at timestamptz NOT NULL "
                        "DEFAULT now())")
SELECT_VERSION = "SELECT coalesce(max(version), 0) FROM worldflow_schema_version"
INSERT_VERSION = "INSERT INTO worldflow_schema_version (version) VALUES ($1)"
VERSION_TABLE_EXISTS = "SELECT to_regclass('worldflow_schema_version') IS NOT NULL"
TAKE_LOCK = "SELECT pg_advisory_xact_lock($1)"


def _sql(name: str) -> str:
    return resources.files("worldflow.worlds.postgres").joinpath(name).read_text()


async def setup_schema(conn: asyncpg.Connection) -> tuple[int, int]:
    """Bring the schema to SCHEMA_VERSION; return (version before, version after)."""
    async with conn.transaction():
        await conn.execute(TAKE_LOCK, LOCK_KEY)
        if await conn.fetchval(VERSION_TABLE_EXISTS):
            before = int(await conn.fetchval(SELECT_VERSION))
        else:
            before = 0
        if before > SCHEMA_VERSION:
            raise SchemaError(
                f"the database's worldflow schema is version {before}, newer than this "
                f"worldflow (version {SCHEMA_VERSION}); upgrade worldflow. Nothing was "
                f"changed.")
        await apply_migrations(conn, SCHEMA_VERSION, after=before)
        await conn.execute(_sql("functions.sql"))
    return before, SCHEMA_VERSION


async def apply_migrations(conn: asyncpg.Connection, upto: int, *, after: int = 0) -> None:
    """Apply the migrations after version `after` up to `upto`, each recorded in the
    version table (made if missing), in the caller's transaction. (Tests make a database
    of an earlier version with it, to upgrade.)"""
    await conn.execute(CREATE_VERSION_TABLE)
    for version in range(after + 1, upto + 1):
        await conn.execute(_sql(MIGRATIONS[version]))
        await conn.execute(INSERT_VERSION, version)
