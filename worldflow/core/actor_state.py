"""The state of a run's actor (worldflow.core.actor.RunActor), and its mailbox.

Each concern of the actor is a class over this one, in its own module: starting from
the log (actor_start), the live run (actor_live), step attempts (actor_steps), child
runs (actor_children) and the end (actor_end). RunActor composes them.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

from worldflow.core.events import ErrorInfo, EventRecord
from worldflow.core.mailbox import InboxChanged, Message

if TYPE_CHECKING:
    import datetime as dt

    from opentelemetry.trace import Span

    from worldflow.core.context import WorkflowMetadata
    from worldflow.core.engine import Engine
    from worldflow.core.events import Event
    from worldflow.core.instance import WorkflowInstance
    from worldflow.core.records import RunRecord
    from worldflow.core.world import TimerHandle, World


class ActorState:
    """What one run's actor holds; the methods every concern uses."""

    def __init__(self, engine: Engine, run_id: str, *,
                 fresh: RunRecord | None = None,
                 trace_context: dict[str, str] | None = None) -> None:
        self.engine = engine
        # created by this process just now: its log is run_created alone, its inbox empty
        self._fresh = fresh
        self.world: World = engine.world
        self.run_id = run_id
        self._mailbox: collections.deque[Message] = collections.deque()
        #: what the loop waits on while its mailbox is empty (set by `post`)
        self._wakeup: asyncio.Future[None] | None = None
        self._seq = 0
        self._instance: WorkflowInstance | None = None
        self._meta: WorkflowMetadata | None = None
        self._steps: dict[str, asyncio.Task[None]] = {}
        self._timers: dict[str, TimerHandle] = {}
        self._retries: dict[str, tuple[int, dt.datetime]] = {}  # cid -> (next attempt, at)
        self._attempts: dict[str, int] = {}
        self._recorded: set[str] = set()
        self._hooks_open: dict[str, str] = {}  # token -> cid
        self.task: asyncio.Task[None] | None = None
        #: the run is being given back or ended: its lease may be gone already
        self.releasing = False
        self._deadline: dt.datetime | None = None  # the workflow's timeout
        self._queue_slot: tuple[str, str] | None = None
        self._children_open: dict[str, str] = {}  # child run id -> cid
        #: the topics of the last message_waiting note since a message came (not noted
        #: again while they are the same)
        self._noted_topics: tuple[str, ...] | None = None
        #: a cancel reached the workflow (cancel_requested is in the log)
        self._cancel_requested = False
        #: steps whose attempt (or retry) the cancel stopped: their outcomes are ignored
        self._cancelled_steps: set[str] = set()
        #: the cancel being processed stopped running attempts (see LiveRun._process)
        self._attempts_stopped = False
        self._parent_run_id: str | None = None
        self._record_at_start: RunRecord | None = None
        #: events recorded at start that go with the next append (see `_take_unsent`)
        self._unsent: list[EventRecord] = []
        #: the run's final record once this actor's terminal append has committed; None
        #: when the actor stops without ending the run (evicted, lease lost, crashed)
        self.ended: asyncio.Future[RunRecord | None] = (
            asyncio.get_running_loop().create_future())
        # telemetry (see core/telemetry.py): this actor's segment of the run's trace
        self._trace_context = trace_context or {}
        self._span: Span | None = None
        self._span_outcome = "stopped"
        self._span_error: BaseException | ErrorInfo | None = None

    @property
    def busy(self) -> bool:
        """A step attempt of the run is running, or input waits in its mailbox (a test
        clock moves time only when no actor is busy)."""
        return bool(self._steps or self._mailbox)

    # -- mailbox -------------------------------------------------------------------
    def post(self, message: Message) -> None:
        self._mailbox.append(message)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def inbox_changed(self) -> None:
        """The run's inbox got input (a hook payload, a cancel request)."""
        self.post(InboxChanged())

    def _record(self, event: Event) -> EventRecord:
        record = EventRecord(self.run_id, self._seq, event, self.world.now())
        self._seq += 1
        if self.engine.log_events:
            self.engine.log_event(record)
        return record

    def _take_unsent(self, records: list[EventRecord]) -> list[EventRecord]:
        """`records` after the events recorded at start and not yet appended."""
        if self._unsent:
            records = [*self._unsent, *records]
            self._unsent = []
        return records

    def _schedule_child_recheck(self) -> None:
        """Defined by RunActor (worldflow.core.actor), which reads CHILD_RECHECK."""
        raise NotImplementedError
