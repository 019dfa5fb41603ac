"""A payload that does not validate as a typed hook's type never fails the run,
whoever sent it: `HookType.resume` refuses it at the sender; `resume_hook` without the
type (or another process writing the inbox) gets it recorded as `hook_rejected`, and
the run goes on waiting. Replay skips it the same way, and `retry_run` of a run that
an older version failed this way does not fail again on the bad payload."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import pytest

from worldflow import define_hook, resume_hook, retry_run, start, workflow
from worldflow.core.hooks import Hook
from worldflow.core.serde import decode_value

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


class Order(msgspec.Struct):
    sku: str
    qty: int


OrderHook = define_hook(Order)


@workflow(name="thr_wait_order")
async def wait_order(token: str) -> dict[str, Any]:
    hook = OrderHook.create(token=token)
    order = await hook
    return {"sku": order.sku, "qty": order.qty}


async def _until(check: Callable[[], Awaitable[Any]], attempts: int = 3000) -> Any:
    for _ in range(attempts):
        if value := await check():
            return value
        await anyio.sleep(0.02)
    raise TimeoutError(f"{check} stayed false")


async def _events(world: Any, run_id: str, kind: str) -> list[Any]:
    return [e for e in await world.list_events(run_id) if e.event_type == kind]


async def test_bad_payload_without_the_type_is_rejected_and_the_run_keeps_waiting(
        world: Any) -> None:
    token = f"order-{uuid.uuid4().hex}"
    run = await start(wait_order, token, world=world)
    await _until(lambda: world.get_hook(token))
    with pytest.raises(msgspec.ValidationError):  # the typed sender refuses it
        await OrderHook.resume(token, {"sku": "a", "qty": "many"}, world=world)
    await resume_hook(token, {"sku": 1, "qty": "many"}, world=world)  # untyped sender
    # as another process would: straight into the run's inbox, nobody validating
    await world.resume_hook(token, msgspec.Raw(b'{"nothing": true}'))
    rejected = await _until(lambda: _rejected_twice(world, run.run_id))
    assert all("ValidationError" in e.event.reason for e in rejected)
    assert msgspec.json.decode(rejected[0].event.payload) == {"sku": 1, "qty": "many"}
    assert await run.status() in ("pending", "running")
    assert await _events(world, run.run_id, "hook_received") == []
    # the run was evicted while waiting: this payload is taken in by a replay of a log
    # that holds both rejections
    await OrderHook.resume(token, Order("b-7", 3), world=world)
    assert await run.result(timeout=90) == {"sku": "b-7", "qty": 3}
    assert len(await _events(world, run.run_id, "hook_received")) == 1


async def _rejected_twice(world: Any, run_id: str) -> list[Any]:
    found = await _events(world, run_id, "hook_rejected")
    return found if len(found) == 2 else []


def _old_deliver(self: Hook[Any], payload: msgspec.Raw) -> None:
    """Hook delivery as it was: a payload that does not validate is raised into the
    workflow, failing the run."""
    try:
        value: Any = decode_value(payload, self._type)
    except Exception as exc:
        value = exc
    while self._waiters:
        waiter = self._waiters.popleft()
        if not waiter.done():
            if isinstance(value, Exception):
                waiter.set_exception(value)
            else:
                waiter.set_result(value)
            return
    self._received.append(value)


async def test_retry_of_a_run_failed_by_a_bad_payload_does_not_replay_it(
        world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    token = f"order-{uuid.uuid4().hex}"
    with monkeypatch.context() as old_version:
        old_version.setattr(Hook, "rejects", lambda self, payload: None)
        old_version.setattr(Hook, "_deliver", _old_deliver)
        run = await start(wait_order, token, world=world)
        await _until(lambda: world.get_hook(token))
        await resume_hook(token, {"sku": 1}, world=world)
        with pytest.raises(Exception, match=r"ValidationError|Expected"):
            await run.result(timeout=90)
    assert await run.status() == "failed"
    assert len(await _events(world, run.run_id, "hook_received")) == 1
    retried = await retry_run(run.run_id, world=world)
    await _until(lambda: _hook_of(world, retried.run_id))
    await anyio.sleep(0.2)
    assert await retried.status() in ("pending", "running")  # waits: not failed again
    await OrderHook.resume(token, Order("c-1", 1), world=world)
    assert await retried.result(timeout=90) == {"sku": "c-1", "qty": 1}


async def _hook_of(world: Any, run_id: str) -> bool:
    return any(h.status == "active" for h in await world.list_hooks(run_id))
