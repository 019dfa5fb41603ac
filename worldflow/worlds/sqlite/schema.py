"""Checking a file before using it, and creating or upgrading the schema.

A path that points at something other than a worldflow database (a text file, another
application's SQLite database) must be refused before anything is written to it, so
the check opens it read-only and only then does the world open it for writing.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.request
from importlib import resources

from worldflow.errors import SchemaError, WorldError

__all__ = ["SCHEMA_VERSION", "check_file", "check_schema", "migrate"]

#: (version, file) of each schema change, applied in order to reach SCHEMA_VERSION
MIGRATIONS = ((1, "0001_initial.sql"), (2, "0002_claims_and_hook_metadata.sql"),
              (3, "0003_child_runs.sql"), (4, "0004_schedules.sql"))
SCHEMA_VERSION = MIGRATIONS[-1][0]

SQLITE_HEADER = b"SQLite format 3\x00"
SELECT_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table'"
SELECT_VERSION = "SELECT max(version) FROM worldflow_schema"
DELETE_VERSION = "DELETE FROM worldflow_schema"
INSERT_VERSION = "INSERT INTO worldflow_schema (version) VALUES (?)"


def check_file(path: str) -> None:
    """Raise `WorldError` (or `SchemaError`) unless `path` is missing, empty, or a
    worldflow database this version can use. Never writes to the file."""
    if os.path.isdir(path):
        raise WorldError(f"SQLite world path {path!r} is a directory; give a file path "
                         f"(WORKFLOW_SQLITE_PATH)")
    try:
        with open(path, "rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise WorldError(f"cannot read SQLite world file {path!r}: {exc}") from exc
    if not header:
        return  # an empty file is a new database
    if header != SQLITE_HEADER:
        raise WorldError(f"{path!r} is not a SQLite database, so it cannot be a worldflow "
                         f"database; give another path (WORKFLOW_SQLITE_PATH)")
    uri = "file:" + urllib.request.pathname2url(os.path.abspath(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise WorldError(f"cannot open SQLite world file {path!r}: {exc}") from exc
    try:
        _check_tables(path, conn)
    except sqlite3.Error as exc:
        raise WorldError(f"cannot read SQLite world file {path!r}: {exc}") from exc
    finally:
        conn.close()


def _check_tables(path: str, conn: sqlite3.Connection) -> int:
    """The file's schema version (0: no tables yet)."""
    tables = {name for (name,) in conn.execute(SELECT_TABLES).fetchall()}
    if not tables:
        return 0
    if "worldflow_schema" not in tables:
        raise WorldError(f"{path!r} is a SQLite database of something else (it has tables "
                         f"but no worldflow_schema table); give worldflow its own file "
                         f"(WORKFLOW_SQLITE_PATH)")
    version = conn.execute(SELECT_VERSION).fetchone()[0] or 0
    if version > SCHEMA_VERSION:
        raise SchemaError(f"{path!r} has worldflow schema version {version}, newer than "
                          f"this worldflow understands ({SCHEMA_VERSION}); upgrade worldflow")
    return int(version)


def check_schema(conn: sqlite3.Connection, path: str) -> None:
    """For a read-only world: the file must already hold this version's schema (it
    cannot be created or upgraded)."""
    version = _check_tables(path, conn)
    if version < SCHEMA_VERSION:
        raise SchemaError(f"{path!r} has worldflow schema version {version}; this "
                          f"worldflow needs {SCHEMA_VERSION}, and a read-only file cannot "
                          f"be upgraded: open it once writable")


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the schema to SCHEMA_VERSION in one transaction; safe against another
    process doing the same at once (the write lock is taken before looking)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _check_tables(path, conn)
        for target, filename in MIGRATIONS:
            if target > version:
                for statement in _statements(filename):
                    conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(DELETE_VERSION)
            conn.execute(INSERT_VERSION, (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _statements(filename: str) -> list[str]:
    # statement by statement: executescript() would commit the open transaction first
    text = resources.files("worldflow.worlds.sqlite").joinpath(filename).read_text(encoding="utf-8")
    statements, current = [], ""
    for line in text.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
