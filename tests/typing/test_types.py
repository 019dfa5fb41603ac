"""The public API's types, checked by mypy: `check_types.py` passes `mypy --strict`,
and a wrong use of a typed run is an error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def _mypy(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--config-file", str(ROOT / "pyproject.toml"), *map(str, paths)],
        capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)


def test_typed_runs_pass_mypy_strict() -> None:
    result = _mypy(HERE / "check_types.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_using_a_run_result_as_the_wrong_type_is_a_mypy_error(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "from __future__ import annotations\n"
        "from worldflow import start, workflow\n\n"
        "@workflow\n"
        "async def count() -> int:\n"
        "    return 1\n\n"
        "async def use() -> str:\n"
        "    run = await start(count)\n"
        "    return await run.result()\n")
    result = _mypy(wrong)
    assert result.returncode == 1
    assert 'Incompatible return value type (got "int", expected "str")' in result.stdout
