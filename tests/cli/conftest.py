from __future__ import annotations

from tests.cli.fixtures import many_runs_db, populated_db, populated_postgres, scratch_db

__all__ = ["many_runs_db", "populated_db", "populated_postgres", "scratch_db"]
