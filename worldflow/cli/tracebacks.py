"""Tracebacks as a user reads them: the frames of worldflow's own code taken out.

A step's stored traceback starts in the engine (``core/steps.py`` calling the step
body); a workflow's passes through the engine's replay and the step decorator. The
recorded text stays whole (``inspect --json`` and the web UI's "full traceback" show
it); what `user_frames` returns starts at the user's own line.
"""

from __future__ import annotations

import os
import re

import worldflow

__all__ = ["is_internal_frame", "user_frames"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(worldflow.__file__)) + os.sep
_FRAME = re.compile(r'^  File "(?P<path>[^"]*)", line \d+, in ')


def is_internal_frame(path: str) -> bool:
    """Whether a traceback frame's file is worldflow's own code (this installation's
    package, or any installed copy of it)."""
    normal = path.replace("\\", "/")
    return path.startswith(_PACKAGE_DIR) or "/site-packages/worldflow/" in normal


def user_frames(traceback: str | None) -> str | None:
    """`traceback` without worldflow's frames. Unchanged when every frame is
    worldflow's (an engine error) or the text is not a Python traceback."""
    if not traceback:
        return traceback
    lines = traceback.splitlines()
    kept: list[str] = []
    dropped = kept_frames = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        match = _FRAME.match(line)
        if match is None:
            kept.append(line)
            index += 1
            continue
        # a frame: its "File" line and the indented source/caret lines under it
        end = index + 1
        while end < len(lines) and lines[end].startswith("    "):
            end += 1
        if is_internal_frame(match["path"]):
            dropped += 1
        else:
            kept.extend(lines[index:end])
            kept_frames += 1
        index = end
    if dropped == 0 or kept_frames == 0:
        return traceback
    return "\n".join(kept) + ("\n" if traceback.endswith("\n") else "")
