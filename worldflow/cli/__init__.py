"""The `worldflow` command: inspect runs (tables, JSON, a web UI), cancel and retry them,
set up Postgres, serve the HTTP transport. Entry point: `worldflow.cli.main.main`."""

from __future__ import annotations
