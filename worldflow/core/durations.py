"""Durations in every form the public API accepts."""

from __future__ import annotations

import datetime as dt
import re

__all__ = ["Duration", "parse_duration", "resolve_deadline"]

Duration = float | int | str | dt.timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")


def parse_duration(value: object, *, what: str = "duration") -> float:
    """Return a duration as seconds.

    Accepts a number of seconds, a `timedelta`, or a string such as ``"500ms"``,
    ``"30s"``, ``"5m"``, ``"1h"``, ``"2d"``. Negative durations and other types
    raise `ValueError`/`TypeError` naming `what`.
    """
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number of seconds, a timedelta or a string "
                        f"like '30s', not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError(f"{what}: cannot parse {value!r}; use a number of seconds or "
                             f"a string like '500ms', '30s', '5m', '1h', '2d'")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise TypeError(f"{what} must be a number of seconds, a timedelta or a string "
                        f"like '30s', not {type(value).__name__}")
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return seconds


def resolve_deadline(value: object, now: dt.datetime, *, what: str = "duration") -> dt.datetime:
    """Turn a duration or an aware datetime into an absolute UTC deadline."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{what}: a datetime must be timezone-aware, got {value!r}")
        return value.astimezone(dt.UTC)
    return now + dt.timedelta(seconds=parse_duration(value, what=what))
