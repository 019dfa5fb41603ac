"""Child runs of a run's actor: created (idempotent by id), looked at until they end,
and cancelled or told of the parent's end."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from worldflow.core import telemetry
from worldflow.core.actor_state import ActorState
from worldflow.core.events import NO_METADATA, ChildEnded, EventRecord
from worldflow.core.instance import ChildCall
from worldflow.core.mailbox import ChildCheck
from worldflow.core.records import NewRun

if TYPE_CHECKING:
    from worldflow.core.world import World

logger = logging.getLogger("worldflow.run")


class ChildRuns(ActorState):
    """Create the run's children and find out when they end."""

    async def _create_child(self, call: ChildCall) -> None:
        """Create the child run (idempotent by its id) and run it here if there is room."""
        world, engine = self.world, self.engine
        local = engine.has_capacity
        # the child's spans go under this segment (or, unrecorded, the stored context)
        trace_context = (telemetry.carrier_of(self._span) if self._span is not None
                         else self._trace_context)
        record, created = await world.create_run(
            NewRun(call.child_run_id, call.defn.name, call.input, world.now(),
                   parent_run_id=self.run_id, trace_context=trace_context,
                   tags=call.tags),
            lease_owner=engine.worker_id if local else None,
            lease_seconds=world.lease_seconds)
        if created and local:
            engine.dispatch(call.child_run_id, fresh=record, trace_context=trace_context)
        elif not created and record.status.is_terminal:
            self.post(ChildCheck(call.child_run_id))

    async def _check_child(self, child_id: str) -> EventRecord | None:
        """`child_ended` for an open child that has ended (None: it has not, or it is
        not open); a child missing from the world is created."""
        instance = self._instance
        assert instance is not None
        cid = self._children_open.get(child_id)
        if cid is None:
            return None
        run = await self.world.get_run(child_id)
        if run is None:
            await self._create_child(instance.expect(cid, ChildCall))
            return None
        if not run.status.is_terminal:
            return None
        del self._children_open[child_id]
        if run.status == "continued":  # the child went on as the chain's next run
            next_id = msgspec.json.decode(bytes(run.output or b'""'), type=str)
            self._children_open[next_id] = cid
            return await self._check_child(next_id)
        return self._record(ChildEnded(cid, child_id, run.status.value,
                                       run.output or NO_METADATA, run.error))


async def after_end(world: World, run_id: str, parent_run_id: str | None,
                    children_to_cancel: list[str]) -> None:
    """After a run's terminal event: cancel its unfinished children, and tell its
    parent (a lost notice is found by the parent's periodic look, CHILD_RECHECK)."""
    for child_id in children_to_cancel:
        try:
            await world.request_cancel(child_id)
        except Exception:
            logger.warning("run %s: could not cancel child run %s", run_id, child_id,
                           exc_info=True)
    if parent_run_id is not None:
        try:
            await world.child_ended(parent_run_id, run_id)
        except Exception:
            logger.warning("run %s: could not tell parent run %s that it ended", run_id,
                           parent_run_id, exc_info=True)
