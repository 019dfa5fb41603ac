"""Hooks: a workflow waits for payloads sent from outside with `resume_hook(token, ...)`."""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from worldflow.core.instance import current_instance
from worldflow.core.serde import decode_value
from worldflow.errors import NotInWorkflowError

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncIterator, Generator

    from msgspec import Raw

    from worldflow.core.instance import WorkflowInstance

__all__ = ["Hook", "HookType", "create_hook", "define_hook", "new_hook"]

T = TypeVar("T")

logger = logging.getLogger("worldflow.workflow")


class Hook(Generic[T]):
    """A hook inside a workflow. `await hook` gives the next payload; `async for
    payload in hook` gives every payload, in the order they were received."""

    def __init__(self, instance: WorkflowInstance, token: str, cid: str,
                 payload_type: Any = Any) -> None:
        self.token = token
        self.correlation_id = cid
        self._instance = instance
        self._type = payload_type
        #: recorded on the hook's `hook_created` event (e.g. what a webhook answers)
        self.metadata: Raw | None = None
        self._received: collections.deque[Any] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()

    def rejects(self, payload: Raw) -> str | None:
        """Why `payload` is not a valid payload of this hook (None if it is)."""
        if self._type is Any:
            return None
        try:
            decode_value(payload, self._type)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def _deliver(self, payload: Raw) -> None:
        try:
            value = decode_value(payload, self._type)
        except Exception as exc:
            # the actor records such a payload as hook_rejected; a hook_received one
            # gets here only from a log written before that (or under another type):
            # skipped, on replay as live, so that it never fails the run
            logger.warning("hook %s: a received payload does not validate as %r and is "
                           "skipped: %s", self.token, self._type, exc)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(value)
                return
        self._received.append(value)

    async def _next(self) -> T:
        if self._received:
            return self._received.popleft()  # type: ignore[no-any-return]
        waiter = self._instance.loop.create_future()
        self._waiters.append(waiter)
        return await waiter  # type: ignore[no-any-return]

    def __await__(self) -> Generator[Any, None, T]:
        return self._next().__await__()

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        return await self._next()

    def __repr__(self) -> str:
        return f"<Hook token={self.token!r}>"


H = TypeVar("H", bound=Hook[Any])


def new_hook(token: str | None, payload_type: Any, what: str, *,
             cls: type[H] = Hook, metadata: Raw | None = None) -> H:  # type: ignore[assignment]
    """Create a hook of class `cls` in the running workflow; `metadata` (JSON) is
    recorded with it. For extensions such as webhooks; users call `create_hook`."""
    instance = current_instance()
    if instance is None:
        raise NotInWorkflowError(f"{what} works only inside a workflow function")
    if token is not None and (not isinstance(token, str) or not token
                              or len(token) > 512):
        raise ValueError(f"hook token must be a non-empty string of at most 512 "
                         f"characters, got {token!r:.80}")

    def make(tok: str, cid: str) -> H:
        hook = cls(instance, tok, cid, payload_type)
        hook.metadata = metadata
        return hook

    hook: H = instance.create_hook(token, make)
    return hook


def create_hook(token: str | None = None) -> Hook[Any]:
    """Create a hook in the running workflow. Without `token`, an unguessable one
    (192 random bits) is made; give your own to make it addressable by a known key."""
    return new_hook(token, Any, "create_hook()")


class HookType(Generic[T]):
    """A hook whose payloads are validated as `payload_type` (see `define_hook`)."""

    def __init__(self, payload_type: type[T]) -> None:
        self.payload_type = payload_type

    def create(self, token: str | None = None) -> Hook[T]:
        return new_hook(token, self.payload_type, "create()")

    async def resume(self, token: str, payload: Any, world: Any = None) -> str:
        """Validate `payload` as the hook's type, then deliver it. A bad payload raises
        `msgspec.ValidationError` and the run is untouched."""
        from worldflow.core.api import resume_hook

        return await resume_hook(token, payload, world=world, payload_type=self.payload_type)


def define_hook(payload_type: type[T]) -> HookType[T]:
    """A typed hook: ``OrderHook = define_hook(Order)``; ``OrderHook.create()`` in a
    workflow, ``await OrderHook.resume(token, order)`` outside."""
    return HookType(payload_type)
