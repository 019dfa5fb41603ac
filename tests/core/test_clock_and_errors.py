"""One clock (`world.now()`) for retry times; `RetryableError` checks `retry_after`
where it is raised; a step's failure is stored with its structure (step name,
attempts, original error), not only as text."""

from __future__ import annotations

import collections
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from worldflow import (
    FatalError,
    RetryableError,
    StepFailedError,
    create_world,
    get_step_metadata,
    start,
    step,
    workflow,
)
from worldflow.core.events import ErrorInfo, RunFailed, decode_event, encode_event
from worldflow.core.records import RunRecord, RunStatus
from worldflow.core.run_errors import run_error_of as _run_error

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

ran: collections.Counter[str] = collections.Counter()
SKEW = dt.timedelta(days=10)


def skewed_clock() -> dt.datetime:
    """A world clock ten days ahead of the system's: times the engine records must
    come from it, never from the system clock."""
    return dt.datetime.now(dt.UTC) + SKEW


@pytest.fixture(params=["memory", "sqlite"])
async def skewed_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    options: dict[str, Any] = {"clock": skewed_clock, "queue_concurrency": 10}
    if request.param == "sqlite":
        options["path"] = str(tmp_path / "skewed.db")
    w = create_world(request.param, **options)
    async with w:
        yield w


# -- RetryableError(retry_after=...) ------------------------------------------------
@pytest.mark.parametrize("value", [None, "50ms", "5m", 1.5, 0, dt.timedelta(seconds=3),
                                   dt.datetime(2030, 1, 1, tzinfo=dt.UTC)])
def test_retryable_error_takes_every_duration_form(value: Any) -> None:
    assert RetryableError("later", retry_after=value).retry_after == value


@pytest.mark.parametrize(("value", "error"), [
    ("soon", ValueError), ("-5s", ValueError), (-1, ValueError),
    (dt.datetime(2030, 1, 1), ValueError),  # naive
    (object(), TypeError), (True, TypeError), ([1], TypeError)])
def test_retryable_error_refuses_a_bad_retry_after_where_it_is_raised(
        value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"RetryableError\(retry_after=\.\.\.\)"):
        RetryableError("later", retry_after=value)


# -- one clock --------------------------------------------------------------------------
@step(name="k_retry_after", max_retries=2)
async def retry_after_step(key: str) -> str:
    ran[key] += 1
    if get_step_metadata().attempt == 1:
        raise RetryableError("later", retry_after="50ms")
    return "done"


@workflow(name="k_retry_after_wf")
async def retry_after_wf(key: str) -> str:
    return await retry_after_step(key)


@step(name="k_backoff", max_retries=2, backoff="30ms")
async def backoff_step(key: str) -> str:
    ran[key] += 1
    if get_step_metadata().attempt == 1:
        raise ValueError("flaky")
    return "done"


@workflow(name="k_backoff_wf")
async def backoff_wf(key: str) -> str:
    return await backoff_step(key)


@pytest.mark.parametrize(("wf", "delay"), [(retry_after_wf, 0.05), (backoff_wf, 0.03)])
async def test_retry_times_come_from_the_world_clock(skewed_world: Any, wf: Any,
                                                     delay: float) -> None:
    key = uuid.uuid4().hex
    run = await start(wf, key, world=skewed_world)
    assert await run.result(timeout=10) == "done"
    assert ran[key] == 2
    events = await skewed_world.list_events(run.run_id)
    retrying = next(e for e in events if e.event_type == "step_retrying")
    second_start = [e for e in events if e.event_type == "step_started"][1]
    waited = retrying.event.retry_at - retrying.created_at
    # the retry is `delay` after the failure was recorded, on the world's clock (the
    # system clock is ten days behind), however long the outcome took to be recorded
    assert dt.timedelta(seconds=delay * 0.9) <= waited < dt.timedelta(seconds=5)
    assert second_start.created_at >= retrying.event.retry_at


# -- a step's failure, with its structure -----------------------------------------------
@step(name="k_always_fails", max_retries=2, backoff="1ms")
async def always_fails(key: str) -> str:
    ran[key] += 1
    raise KeyError(f"missing {key}")


@workflow(name="k_fails_wf")
async def fails_wf(key: str) -> str:
    return await always_fails(key)


@step(name="k_fatal")
async def fatal_step() -> str:
    raise FatalError("never")


@workflow(name="k_fatal_wf")
async def fatal_wf() -> str:
    return await fatal_step()


async def test_step_failure_that_fails_the_run_is_stored_with_its_fields(
        memory_world: Any) -> None:
    key = uuid.uuid4().hex
    run = await start(fails_wf, key, world=memory_world)
    with pytest.raises(StepFailedError) as info:
        await run.result(timeout=10)
    assert ran[key] == 3
    exc = info.value
    assert (exc.step_name, exc.attempts, exc.error_type) == ("k_always_fails", 3, "KeyError")
    assert exc.message == repr(f"missing {key}")
    stored = (await run.info()).error
    assert stored is not None
    assert (stored.type, stored.step_name, stored.attempts, stored.cause_type,
            stored.cause_message) == ("StepFailedError", "k_always_fails", 3, "KeyError",
                                      repr(f"missing {key}"))


async def test_fatal_step_error_that_fails_the_run_names_its_step(memory_world: Any) -> None:
    run = await start(fatal_wf, world=memory_world)
    with pytest.raises(FatalError) as info:
        await run.result(timeout=10)
    assert info.value.step_name == "k_fatal" and info.value.message == "never"


def _failed_run(error: ErrorInfo) -> RunRecord:
    now = dt.datetime.now(dt.UTC)
    return RunRecord("old-run", "k_fails_wf", RunStatus.FAILED, msgspec.Raw(b"{}"), None,
                     error, now, now, now, now)


def test_step_failure_stored_before_the_fields_existed_still_decodes() -> None:
    old = (b'{"type":"run_failed","error":{"type":"StepFailedError","message":'
           b'"step \'fetch\' failed after 4 attempt(s): ValueError: boom\\nline 2",'
           b'"traceback":"Traceback ..."}}')
    event = decode_event(old)
    assert isinstance(event, RunFailed)
    assert event.error.step_name is None and event.error.attempts is None
    exc = _run_error(_failed_run(event.error))
    assert isinstance(exc, StepFailedError)
    assert (exc.step_name, exc.attempts, exc.error_type, exc.message, exc.traceback) == (
        "fetch", 4, "ValueError", "boom\nline 2", "Traceback ...")


def test_error_info_fields_are_stored_only_when_set() -> None:
    plain = encode_event(RunFailed(ErrorInfo("ValueError", "bad")))
    assert plain == b'{"type":"run_failed","error":{"type":"ValueError","message":"bad"}}'
    full = RunFailed(ErrorInfo("StepFailedError", "m", step_name="s", attempts=2,
                               cause_type="KeyError", cause_message="'k'"))
    assert decode_event(encode_event(full)) == full
