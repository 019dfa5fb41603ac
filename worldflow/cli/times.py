"""Times given on the command line: ``inspect runs --since``."""

from __future__ import annotations

import datetime as dt
import re

from worldflow.core.durations import parse_duration

__all__ = ["Since", "parse_since", "since_time"]

#: an absolute time (aware, UTC) or an age counted back from the world's clock
Since = dt.datetime | dt.timedelta

# an age needs its unit: a bare number could be seconds or a year
_AGE = re.compile(r"^\d+(?:\.\d+)?(?:ms|s|m|h|d|w)$")


def parse_since(text: str) -> Since:
    """``--since``: an ISO 8601 time (``2024-05-01``, ``2024-05-01T12:00``,
    ``2024-05-01T12:00+02:00``, ``...Z``; without a zone it is UTC) or an age such as
    ``15m``, ``2h``, ``3d`` (also ``s``, ``w``). `ValueError` naming `text` otherwise."""
    value = text.strip()
    if _AGE.match(value):
        return dt.timedelta(seconds=parse_duration(value, what="--since"))
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a time or an age: {text!r} (give an ISO 8601 time such as "
                         f"2024-05-01T12:00, UTC unless it names a zone, or an age such "
                         f"as 15m, 2h, 3d)") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def since_time(since: Since, now: dt.datetime) -> dt.datetime:
    """The aware time `since` stands for when it is `now`."""
    return now - since if isinstance(since, dt.timedelta) else since
