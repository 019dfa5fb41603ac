"""The CLI's own errors: failures reported as one line with an exit status (`main`
maps each to its status)."""

from __future__ import annotations

__all__ = ["CliError", "NotFound", "UsageError"]


class CliError(Exception):
    """A failure reported as one line on stderr with exit status `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class NotFound(LookupError):
    """Something named on the command line does not exist (exit status 1)."""


class UsageError(ValueError):
    """A value on the command line that the world refuses, e.g. a bad cursor (status 2)."""
