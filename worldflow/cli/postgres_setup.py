"""`worldflow postgres-setup`: create or upgrade the Postgres world's schema."""

from __future__ import annotations

from worldflow.worlds.postgres.schema import SCHEMA_VERSION

__all__ = ["postgres_setup"]


async def postgres_setup(url: str, job_prefix: str = "worldflow") -> str:
    """Create (or upgrade) the tables; idempotent. Returns a one-line summary."""
    from worldflow.worlds.postgres import PostgresWorld
    from worldflow.worlds.postgres.schema import setup_schema

    world = PostgresWorld(url, job_prefix=job_prefix)
    conn = await world._connect()
    try:
        before, after = await setup_schema(conn)
    finally:
        await conn.close()
    if before == after:
        return f"worldflow schema is up to date (version {after}) at {world.address}"
    return (f"worldflow schema {'created' if before == 0 else 'upgraded'} at {world.address}: "
            f"version {before} -> {after} (SCHEMA_VERSION {SCHEMA_VERSION})")
