"""`inspect runs` says what a running run waits for; tracebacks are shown from the user's
frames (`worldflow.cli.tracebacks`), the stored ones kept whole."""

from __future__ import annotations

import os

from tests.cli.flows import FAILED_RUN, HOOK_RUN, SECOND_HOOK_TOKEN
from tests.cli.helpers import run_cli
from worldflow.cli.tracebacks import is_internal_frame, user_frames

PACKAGE = os.path.dirname(os.path.abspath(__import__("worldflow").__file__))
FLOWS = os.path.abspath(__import__("tests.cli.flows", fromlist=["x"]).__file__)


def test_runs_list_shows_the_sub_status_of_a_running_run(populated_db: str) -> None:
    result = run_cli(populated_db, "inspect", "runs")
    assert result.code == 0, result.err
    row = next(line for line in result.out.splitlines() if HOOK_RUN in line)
    assert "running (waiting for hook)" in row
    listed = run_cli(populated_db, "inspect", "runs", "--json").json()["runs"]
    waiting = {run["run_id"]: run["waiting"] for run in listed}
    assert waiting[HOOK_RUN]["kind"] == "hook"
    assert waiting[HOOK_RUN]["token"] == SECOND_HOOK_TOKEN  # the one without a payload
    assert waiting[FAILED_RUN] is None


def test_run_detail_says_which_hook_it_waits_for(populated_db: str) -> None:
    result = run_cli(populated_db, "inspect", "runs", HOOK_RUN)
    assert result.code == 0, result.err
    line = next(line for line in result.out.splitlines() if line.startswith("waiting"))
    assert line.split(None, 1)[1].strip() == f"waiting for hook (token {SECOND_HOOK_TOKEN})"


def test_failed_run_detail_shows_tracebacks_without_worldflow_frames(
        populated_db: str) -> None:
    result = run_cli(populated_db, "inspect", "runs", FAILED_RUN)
    assert result.code == 0, result.err
    frames = [line for line in result.out.splitlines() if line.strip().startswith("File ")]
    assert frames, result.out
    assert not any(PACKAGE in frame for frame in frames)
    assert all(FLOWS in frame for frame in frames)
    assert "step cli_reserve #2 failed: ValueError" in result.out
    # --json keeps the stored traceback whole
    detail = run_cli(populated_db, "inspect", "runs", FAILED_RUN, "--json").json()
    assert PACKAGE in detail["steps"][1]["error"]["traceback"]


TRACE = f'''Traceback (most recent call last):
  File "{PACKAGE}/core/steps.py", line 90, in run_step_attempt
    result = await _call(step, args, kwargs)
             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "{PACKAGE}/core/steps.py", line 127, in _call
    return await step.fn(*args, **kwargs)
  File "/home/me/app/flows.py", line 9, in charge
    return helper(x)
           ^^^^^^^^^
  File "/home/me/app/flows.py", line 5, in helper
    raise ValueError(f"bad {{x}}")
ValueError: bad 3
'''


def test_user_frames_drop_worldflows_frames_and_keep_the_rest_in_order() -> None:
    assert user_frames(TRACE) == '''Traceback (most recent call last):
  File "/home/me/app/flows.py", line 9, in charge
    return helper(x)
           ^^^^^^^^^
  File "/home/me/app/flows.py", line 5, in helper
    raise ValueError(f"bad {x}")
ValueError: bad 3
'''


def test_user_frames_of_chained_exceptions_trim_each_part() -> None:
    chained = TRACE + "\nDuring handling of the above exception, another exception " \
                      "occurred:\n\n" + TRACE.replace("ValueError: bad 3", "KeyError: 'k'")
    shown = user_frames(chained)
    assert shown is not None
    assert PACKAGE not in shown
    assert shown.count('  File "/home/me/app/flows.py", line 9, in charge') == 2
    assert "During handling of the above exception" in shown
    assert shown.rstrip().endswith("KeyError: 'k'")


def test_user_frames_leave_engine_only_and_foreign_text_alone() -> None:
    engine_only = (f'Traceback (most recent call last):\n  File "{PACKAGE}/core/actor.py", '
                   f'line 3, in run\n    x()\nRuntimeError: engine\n')
    assert user_frames(engine_only) == engine_only
    assert user_frames("not a traceback") == "not a traceback"
    assert user_frames(None) is None
    assert user_frames("") == ""


def test_installed_copies_of_worldflow_count_as_internal() -> None:
    assert is_internal_frame("/usr/lib/python3/site-packages/worldflow/core/steps.py")
    assert is_internal_frame(f"{PACKAGE}/cli/main.py")
    assert not is_internal_frame("/home/me/worldflow_app/flows.py")
    assert not is_internal_frame(FLOWS)
