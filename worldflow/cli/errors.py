"""The CLI's own error: a failure to report as one line with an exit status."""

from __future__ import annotations

__all__ = ["CliError"]


class CliError(Exception):
    """A failure reported as one line on stderr with exit status `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
