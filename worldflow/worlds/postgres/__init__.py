"""The Postgres world: production storage shared by many processes (asyncpg)."""

from __future__ import annotations

from worldflow.worlds.postgres.world import PostgresWorld

__all__ = ["PostgresWorld"]
