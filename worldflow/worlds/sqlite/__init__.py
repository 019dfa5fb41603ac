"""The SQLite world: the embedded default (aiosqlite, WAL, group commit)."""

from __future__ import annotations

from worldflow.worlds.sqlite.world import SQLiteWorld

__all__ = ["SQLiteWorld"]
