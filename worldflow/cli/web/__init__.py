"""The local web UI: `app(world)` is a Starlette (ASGI) app; `worldflow inspect runs
--web` serves it on http://127.0.0.1:3456/."""

from __future__ import annotations

from worldflow.cli.web.app import app

__all__ = ["app"]
