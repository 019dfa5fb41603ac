"""What a running run waits for, derived from its event log: the sub-status shown by
`inspect runs` and the web UI instead of a bare "running".

An item opens with one event and closes with another (``step_started`` ..
``step_completed``/``step_failed``, ``step_retrying`` .. the next ``step_started``,
``wait_created`` .. ``wait_completed``, ``hook_created`` .. ``hook_disposed``,
``child_started`` .. ``child_ended``). Of the items still open, the one the run most
likely waits on is shown, in this order: a step attempt running, a retry backoff, a
hook that has not had a payload yet, a sleep (or timeout), a child run, a hook that has
had payloads (``async for``). With none open, a started run waits for a message: when
it is set aside, its ``receive()`` topics are noted (``message_waiting``), until a
message on one of them comes; a ``receive(timeout=...)`` noted after its sleep shows as
a message wait until that deadline.

``Waiting`` (the ``"waiting"`` key of RunSummary/RunDetail; null unless running)::

    {"kind": "running" | "cancelling" | "retrying" | "hook" | "sleep" | "child"
             | "message",
     "label": str,   # "running step", "retrying", "waiting for hook", "sleeping",
                     # "waiting for child", "waiting for message", "cancelling"
     "detail": str,  # e.g. "until 2026-01-01T00:00:00+00:00", "token approve-me"
     "until": str | null, "token": str | null, "child_run_id": str | null,
     "workflow_name": str | null (the child's), "step_name": str | null,
     "topics": [str] | null (a message's: the topics receive() waits on),
     "correlation_id": str | null}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worldflow.core.events import (
    CancelRequested,
    ChildEnded,
    ChildStarted,
    HookCreated,
    HookDisposed,
    HookReceived,
    MessageReceived,
    MessageWaiting,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
    WaitCompleted,
    WaitCreated,
)
from worldflow.errors import CorruptRecordError

if TYPE_CHECKING:
    import datetime as dt

    from worldflow.core.events import EventRecord
    from worldflow.core.records import RunRecord
    from worldflow.core.world import World

__all__ = ["LABELS", "run_waiting", "waiting_for", "waiting_text"]

LABELS = {
    "running": "running step",
    "cancelling": "cancelling",
    "retrying": "retrying",
    "hook": "waiting for hook",
    "sleep": "sleeping",
    "child": "waiting for child",
    "message": "waiting for message",
}

# lower is shown first
_RANK = {"cancelling": 0, "running": 1, "retrying": 2, "hook": 3, "sleep": 4, "child": 5,
         "hook-received": 6}


def _item(kind: str, seq: int, *, until: dt.datetime | None = None, token: str | None = None,
          child_run_id: str | None = None, workflow_name: str | None = None,
          step_name: str | None = None, correlation_id: str | None = None) -> dict[str, Any]:
    return {"kind": kind, "seq": seq, "until": until, "token": token,
            "child_run_id": child_run_id, "workflow_name": workflow_name,
            "step_name": step_name, "correlation_id": correlation_id}


def waiting_for(run: RunRecord, events: list[EventRecord]) -> dict[str, Any] | None:
    """What `run` waits for (the ``Waiting`` shape), or None when it is not running."""
    if run.status.value != "running":
        return None
    started = False
    cancel_requested = False
    open_items: dict[tuple[str, str], dict[str, Any]] = {}
    received: set[str] = set()
    noted: tuple[int, list[str]] | None = None  # the last message_waiting: (seq, topics)
    for record in events:
        event, seq = record.event, record.seq
        match event:
            case RunStarted():
                started = True
            case CancelRequested():
                cancel_requested = True
            case StepStarted(correlation_id=cid, step_name=name):
                open_items[("step", cid)] = _item("running", seq, step_name=name,
                                                  correlation_id=cid)
            case StepRetrying(correlation_id=cid, step_name=name, retry_at=retry_at):
                open_items[("step", cid)] = _item("retrying", seq, until=retry_at,
                                                  step_name=name, correlation_id=cid)
            case StepCompleted(correlation_id=cid) | StepFailed(correlation_id=cid):
                open_items.pop(("step", cid), None)
            case WaitCreated(correlation_id=cid, resume_at=resume_at):
                open_items[("wait", cid)] = _item("sleep", seq, until=resume_at,
                                                  correlation_id=cid)
            case WaitCompleted(correlation_id=cid):
                open_items.pop(("wait", cid), None)
            case HookCreated(correlation_id=cid, token=token):
                open_items[("hook", cid)] = _item("hook", seq, token=token, correlation_id=cid)
            case HookReceived(correlation_id=cid):
                received.add(cid)
            case HookDisposed(correlation_id=cid):
                open_items.pop(("hook", cid), None)
            case ChildStarted(correlation_id=cid, child_run_id=child, workflow_name=name):
                open_items[("child", cid)] = _item("child", seq, child_run_id=child,
                                                   workflow_name=name, correlation_id=cid)
            case ChildEnded(correlation_id=cid):
                open_items.pop(("child", cid), None)
            case MessageWaiting(topics=topics):
                noted = (seq, topics)
            case MessageReceived(topic=topic) if noted is not None and topic in noted[1]:
                noted = None
            case _:
                pass
    if cancel_requested:
        chosen = _item("cancelling", 0)
    elif open_items:
        def rank(item: dict[str, Any]) -> tuple[int, int]:
            kind = item["kind"]
            if kind == "hook" and item["correlation_id"] in received:
                kind = "hook-received"
            return _RANK[kind], -item["seq"]
        chosen = min(open_items.values(), key=rank)
    elif started and not isinstance(events[-1].event, RunStarted):
        chosen = _item("message", 0)
    else:  # claimed (or created started), but its workflow has not begun
        chosen = _item("running", 0)
    if noted is not None and (chosen["kind"] == "message" or (
            chosen["kind"] == "sleep" and noted[0] > chosen["seq"])):
        # receive() waits on these topics (with a timeout: the sleep is its deadline)
        chosen = {**chosen, "kind": "message", "topics": noted[1]}
    chosen.pop("seq")
    chosen.setdefault("topics", None)
    chosen["label"] = LABELS[chosen["kind"]]
    if chosen["kind"] == "running" and chosen["step_name"] is None:
        chosen["label"] = "running"
    chosen["until"] = None if chosen["until"] is None else chosen["until"].isoformat()
    chosen["detail"] = _detail(chosen)
    return chosen


def _detail(item: dict[str, Any]) -> str:
    kind = item["kind"]
    if kind == "running":
        return "" if item["step_name"] is None else \
            f"{item['step_name']} #{item['correlation_id']}"
    if kind == "retrying":
        return f"{item['step_name']} #{item['correlation_id']} until {item['until']}"
    if kind == "sleep":
        return f"until {item['until']}"
    if kind == "hook":
        return f"token {item['token']}"
    if kind == "child":
        return f"run {item['child_run_id']} ({item['workflow_name']})"
    if kind == "message":
        if item.get("topics"):
            topics = ", ".join(repr(t) for t in item["topics"])
            until = f" until {item['until']}" if item["until"] else ""
            return f"topic {topics}{until}"
        return "no open step, sleep, hook or child: receive() waits for a message"
    return "cancel requested"


def waiting_text(waiting: dict[str, Any] | None) -> str:
    """One line: ``"sleeping until 2026-…"``, ``"waiting for hook (token t)"``."""
    if waiting is None:
        return ""
    detail = waiting["detail"]
    if not detail or (waiting["kind"] == "message" and not waiting.get("topics")):
        return str(waiting["label"])
    if waiting["kind"] in ("sleep",):
        return f"{waiting['label']} {detail}"
    return f"{waiting['label']} ({detail})"


async def run_waiting(world: World, run: RunRecord) -> dict[str, Any] | None:
    """`waiting_for` a listed run, reading its log only when it is running (a corrupt
    log shows no sub-status rather than breaking the listing)."""
    if run.status.value != "running" or run.corrupt is not None:
        return None
    try:
        events = await world.list_events(run.run_id)
    except CorruptRecordError:
        return None
    return waiting_for(run, events)
