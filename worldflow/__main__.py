"""`python -m worldflow ...`: the `worldflow` command, for environments where the
console script is not on PATH."""

from __future__ import annotations

from worldflow.cli.main import main

raise SystemExit(main())
