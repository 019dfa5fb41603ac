"""Run tags and `list_runs`: every run matching filters, newest first, page by page.

Tags are small string pairs given at `start(..., tags={"customer": "42"})`, stored with
the run and never changed. A listing filters on them (all given pairs must match) and
the worlds index them, so a filter does not read every run.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from worldflow.core.records import RunStatus
from worldflow.core.runtime import get_world

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from worldflow.core.records import RunRecord
    from worldflow.core.world import World

__all__ = ["MAX_TAGS", "MAX_TAG_KEY", "MAX_TAG_VALUE", "check_tags", "list_runs",
           "parse_tag"]

MAX_TAGS = 32
MAX_TAG_KEY = 100
MAX_TAG_VALUE = 500
#: runs read from the world per round trip
PAGE_SIZE = 100


def check_tags(tags: object, *, what: str = "tags") -> dict[str, str]:
    """`tags` as a plain dict, or `TypeError`/`ValueError` naming the bad tag.

    A key is 1-100 characters without ``=`` (``key=value`` is how the CLI and the web
    UI write a tag) or control characters; a value is a string of at most 500."""
    if not isinstance(tags, dict):
        raise TypeError(f"{what} must be a dict of str to str, got {type(tags).__name__}")
    if len(tags) > MAX_TAGS:
        raise ValueError(f"{what}: at most {MAX_TAGS} tags, got {len(tags)}")
    checked: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str):
            raise TypeError(f"{what}: tag key {key!r:.80} is a {type(key).__name__}, "
                            f"not a str")
        if not isinstance(value, str):
            raise TypeError(f"{what}: tag {key!r:.80} has a {type(value).__name__} value "
                            f"{value!r:.80}; tag values are str (write str(value))")
        if not key or len(key) > MAX_TAG_KEY:
            raise ValueError(f"{what}: tag key {key!r:.80} must be 1-{MAX_TAG_KEY} "
                             f"characters")
        if "=" in key or not key.isprintable():
            raise ValueError(f"{what}: tag key {key!r:.80} must not contain '=' or "
                             f"control characters")
        if len(value) > MAX_TAG_VALUE or "\x00" in value:
            raise ValueError(f"{what}: tag {key!r:.80} has a value of {len(value)} "
                             f"characters (or a NUL); at most {MAX_TAG_VALUE}, no NUL")
        checked[key] = value
    return checked


def parse_tag(text: str) -> tuple[str, str]:
    """``key=value`` as (key, value); `ValueError` saying what is wrong otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"tag {text!r:.80} is not key=value (for example customer=42)")
    check_tags({key: value}, what="tag")
    return key, value


async def list_runs(workflow: Any = None, status: str | RunStatus | None = None,
                    tags: Mapping[str, str] | None = None, since: dt.datetime | None = None,
                    limit: int | None = None,
                    world: World | None = None) -> AsyncIterator[RunRecord]:
    """Yield runs newest first (by created_at, then run_id), fetched page by page.

    `workflow` is a `@workflow` function or its name; `status` a `RunStatus` or its
    value; `tags` keeps runs having every given key=value pair; `since` (an aware
    datetime) keeps runs created at or after it; `limit` stops after that many runs
    (None: all). Pages are read with a cursor on (created_at, run_id), so runs created
    while iterating do not shift or repeat the ones still to come.

    The SQL worlds walk an index of the first tag given, newest first, and check the
    others per run: with several tags, give the most selective first.
    """
    name = _workflow_name(workflow)
    wanted_status = _status(status)
    wanted_tags = None if tags is None else check_tags(dict(tags) if _is_mapping(tags)
                                                        else tags)
    if since is not None:
        if not isinstance(since, dt.datetime):
            raise TypeError(f"since must be a datetime, got {type(since).__name__}")
        if since.tzinfo is None or since.utcoffset() is None:
            raise ValueError(f"since must be timezone-aware (for example "
                             f"datetime.now(UTC) - timedelta(days=1)), got {since!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 0):
        raise ValueError(f"limit must be None or an int >= 0, got {limit!r:.80}")
    the_world = await get_world(world)
    left = limit
    cursor: str | None = None
    while left is None or left > 0:
        size = PAGE_SIZE if left is None else min(left, PAGE_SIZE)
        page = await the_world.list_runs(status=wanted_status, workflow_name=name,
                                         tags=wanted_tags or None, since=since,
                                         limit=size, cursor=cursor)
        for run in page.items:
            yield run
        if left is not None:
            left -= len(page.items)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _is_mapping(value: object) -> bool:
    return hasattr(value, "keys") and hasattr(value, "__getitem__")


def _workflow_name(workflow: Any) -> str | None:
    if workflow is None or isinstance(workflow, str):
        return workflow
    defn = getattr(workflow, "__worldflow_workflow__", None)
    if defn is None:
        raise TypeError(f"workflow must be a @workflow function or its name, "
                        f"got {workflow!r:.80}")
    name: str = defn.name
    return name


def _status(status: object) -> str | None:
    if status is None:
        return None
    try:
        return RunStatus(str(status)).value
    except ValueError:
        names = ", ".join(s.value for s in RunStatus)
        raise ValueError(f"status must be one of {names}; got {status!r:.80}") from None
