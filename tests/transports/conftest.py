"""Fixtures of the transport tests."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.transports import workflows as wf
from tests.transports.helpers import wait_webhook_ready
from worldflow import start


@pytest.fixture
async def busy_world(world: Any) -> Any:
    """A world holding a run that waits on a hook, and a finished run."""
    tok = f"hook-{uuid.uuid4().hex}"
    await start(wf.plain_hook, tok, world=world)
    await wait_webhook_ready(world, tok)
    done = await start(wf.remote_steps, 2, world=world)
    await done.result(timeout=30)
    return world
