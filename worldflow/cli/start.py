"""`worldflow start WORKFLOW --import MODULE [--json ARGS] [--kwargs OBJ] [--run-id ID]
[--wait [--timeout S]] [--output text|json]`: start a durable run from the shell.

WORKFLOW is a workflow's registered name (``@workflow(name=...)``, by default its
function's name) in the modules given with ``--import`` (importable from the current
directory), or ``module:function``. The arguments are JSON: ``--json`` a list of
positional arguments, ``--kwargs`` an object of keyword arguments; they are checked
against the workflow's signature before anything is stored.

Without ``--wait`` the run is stored and left to the workers of the world (``worldflow
serve``, or any process that has the world started): the command prints the run id. With
``--wait`` this process works on the queue too and waits for the run's end: it prints
the run id, then the result as JSON; a run that failed or was cancelled prints its error
on stderr and exits 1.

Exit status: 0 ok; 1 bad JSON or arguments, a failed/cancelled run, a timeout; 2 a
module that cannot be imported, an unknown workflow, bad usage.
``--output json`` prints one document: ``{"run_id": str, "status": str, "result": any,
"error": Error | null}`` (``status`` and ``result`` as far as known: without ``--wait``
``status`` is the stored run's, ``result`` null).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any, cast

import anyio

from worldflow.cli import shapes
from worldflow.cli.errors import CliError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from worldflow.core.records import RunRecord
    from worldflow.core.registry import WorkflowDef
    from worldflow.core.world import World

__all__ = ["Prepared", "add_parser", "prepare", "start_command"]


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """The ``start`` subcommand (hooked into `worldflow.cli.main.build_parser`)."""
    start = commands.add_parser("start", parents=[common],
                                help="start a workflow run (and with --wait, wait for it)")
    start.add_argument("workflow", metavar="WORKFLOW",
                       help="the workflow's registered name, or module:function")
    start.add_argument("--import", dest="imports", action="append", default=[],
                       metavar="MODULE", help="a module defining workflows (repeatable)")
    start.add_argument("--json", dest="args_json", default="[]", metavar="ARGS",
                       help="positional arguments as a JSON list (default [])")
    start.add_argument("--kwargs", dest="kwargs_json", default="{}", metavar="OBJECT",
                       help="keyword arguments as a JSON object (default {})")
    start.add_argument("--run-id", metavar="ID",
                       help="the run's id (an existing id returns that run: idempotent)")
    start.add_argument("--wait", action="store_true",
                       help="work on the queue here and wait for the run's result")
    start.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                       help="with --wait: give up waiting after this long (exit 1)")
    start.add_argument("--output", choices=("text", "json"), default="text")


def _json_arg(text: str, option: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        shown = "a JSON list" if kind is list else "a JSON object"
        raise CliError(f"{option} must be {shown}, got {text[:80]!r}")
    return value


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError, or the module itself raising
        raise CliError(f"cannot import {module}: {type(exc).__name__}: {exc}", 2) from exc


def find_workflow(name: str, imports: list[str]) -> Callable[..., Any]:
    """The @workflow function `name` names, after importing `imports` (exit 2 if none)."""
    from worldflow.core.registry import _workflows, get_workflow

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # so that --import finds the project's modules
    modules = [_import(module) for module in imports]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        target = getattr(_import(module_name), attr, None)
        if target is None or getattr(target, "__worldflow_workflow__", None) is None:
            raise CliError(f"{name} is not a @workflow function", 2)
        return target  # type: ignore[no-any-return]
    defn = get_workflow(name)
    for module in modules:
        for value in vars(module).values():
            found = getattr(value, "__worldflow_workflow__", None)
            # the registered name, or the Python name of one registered under another
            if found is not None and (found is defn or (
                    defn is None and getattr(value, "__name__", None) == name)):
                return value  # type: ignore[no-any-return]
    if defn is not None:  # registered by a module the imported ones imported
        return cast("Callable[..., Any]", _Workflow(defn))
    known = ", ".join(sorted(_workflows)) or "none"
    hint = "" if imports else " (name the module defining it with --import MODULE)"
    raise CliError(f"no workflow named {name!r}{hint}; known workflows: {known}", 2)


class _Workflow:
    """A registered workflow as `start()` takes it, when no module in reach holds its
    decorated function."""

    def __init__(self, defn: WorkflowDef) -> None:
        self.__worldflow_workflow__ = defn


@dataclasses.dataclass
class Prepared:
    """What to start, checked before any world is opened (bad input changes nothing)."""

    fn: Callable[..., Any]
    args: list[Any]
    kwargs: dict[str, Any]


def prepare(args: argparse.Namespace) -> Prepared:
    from worldflow.core.api import check_arguments, check_run_id

    positional = _json_arg(args.args_json, "--json", list)
    keywords = _json_arg(args.kwargs_json, "--kwargs", dict)
    fn = find_workflow(args.workflow, args.imports)
    defn: WorkflowDef = fn.__worldflow_workflow__  # type: ignore[attr-defined]
    try:
        if args.run_id is not None:
            check_run_id(args.run_id)
        check_arguments(defn.fn, defn.name, tuple(positional), keywords)
    except (TypeError, ValueError) as exc:
        raise CliError(f"cannot start {defn.name}: {exc}") from None
    if args.timeout is not None and not args.timeout > 0:
        raise CliError(f"--timeout must be a number of seconds > 0, got {args.timeout:g}", 2)
    return Prepared(fn, positional, keywords)


async def start_command(world: World, args: argparse.Namespace, what: Prepared) -> None:
    from worldflow.core.api import start

    if args.wait:
        await world.start()  # this process runs the run (and others of the queue)
    try:
        run = await start(what.fn, *what.args, world=world, run_id=args.run_id,
                          **what.kwargs)
    except (TypeError, ValueError) as exc:  # e.g. a value msgspec cannot store
        raise CliError(f"cannot start {args.workflow}: {exc}") from None
    if not args.wait:
        record = await world.get_run(run.run_id)
        status = record.status.value if record is not None else "pending"
        _print(args, {"run_id": run.run_id, "status": status, "result": None, "error": None})
        return
    if args.output == "text":
        print(run.run_id, flush=True)
    try:
        with anyio.fail_after(args.timeout):
            record = await _final(world, run.run_id)
    except TimeoutError:
        raise CliError(f"run {run.run_id} has not ended after {args.timeout:g}s; it goes on "
                       f"(worldflow inspect runs {run.run_id})") from None
    document = {"run_id": record.run_id, "status": record.status.value,
                "result": shapes.decode_raw(record.output)
                if record.status.value == "completed" else None,
                "error": shapes.error_dict(record.error)}
    if args.output == "json":
        _print(args, document)
    elif record.status.value == "completed":
        print(json.dumps(document["result"], ensure_ascii=False), flush=True)
    if record.status.value != "completed":
        error = record.error
        reason = f"{error.type}: {error.message}" if error is not None else "no error recorded"
        raise CliError(f"run {record.run_id} {record.status.value}: {reason}")


async def _final(world: World, run_id: str) -> RunRecord:
    """The run's end, following continue-as-new to the last run of the chain."""
    record = await world.wait_run_finished(run_id)
    while record.status.value == "continued":
        record = await world.wait_run_finished(str(shapes.decode_raw(record.output)))
    return record


def _print(args: argparse.Namespace, document: dict[str, Any]) -> None:
    if args.output == "json":
        print(json.dumps(document, ensure_ascii=False), flush=True)
    else:
        print(document["run_id"], flush=True)
