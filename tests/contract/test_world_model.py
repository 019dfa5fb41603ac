"""A model-based test of the World protocol (hypothesis stateful testing).

Random sequences of operations are applied to a world and to a plain in-memory model
of what the protocol promises; after every operation the observable state must agree.
Where the protocol leaves a choice to the world (which of several ready runs a claim
returns), the model checks that the choice was allowed and then follows it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import tempfile
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from worldflow.core.events import (
    EventRecord,
    HookCreated,
    RunCompleted,
    RunStarted,
    StepCompleted,
    StepStarted,
)
from worldflow.core.records import NewRun
from worldflow.errors import HookNotFoundError, LeaseLostError, RunFinishedError
from worldflow.worlds import create_world

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
LEASE = 10.0
OWNERS = ("worker-a", "worker-b")


@dataclasses.dataclass
class ModelRun:
    seq: int = 1  # next seq (run_created is 0)
    status: str = "pending"
    owner: str | None = None
    lease_until: dt.datetime | None = None
    available_at: dt.datetime | None = T0
    inbox: int = 0
    hooks: list[str] = dataclasses.field(default_factory=list)
    stream: list[int] = dataclasses.field(default_factory=list)
    steps_completed: int = 0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def world_machine(kind: str, postgres_url: str | None) -> type[RuleBasedStateMachine]:
    class WorldMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.clock = Clock()
            self.tmp = tempfile.TemporaryDirectory()
            options: dict[str, Any] = {"clock": self.clock}
            if kind == "sqlite":
                options["path"] = str(Path(self.tmp.name) / "model.db")
            if kind == "postgres":
                options["connection_string"] = postgres_url
                options["job_prefix"] = "m" + uuid.uuid4().hex[:10]
            self.world = create_world(kind, **options)
            self.run_async(self.world.open())
            self.runs: dict[str, ModelRun] = {}
            self.prefix = uuid.uuid4().hex[:8]
            self.counter = itertools.count()

        def run_async(self, coro: Any) -> Any:
            return self.loop.run_until_complete(coro)

        def teardown(self) -> None:
            self.run_async(self.world.close())
            self.loop.close()
            self.tmp.cleanup()

        def live(self) -> list[str]:
            return [r for r, m in self.runs.items() if m.status not in ("completed",
                                                                        "cancelled")]

        def held_by(self, owner: str) -> list[str]:
            return [r for r, m in self.runs.items()
                    if m.owner == owner and m.lease_until and m.lease_until > self.clock.now
                    and m.status != "completed"]

        def claimable(self) -> set[str]:
            now = self.clock.now
            out = set()
            for run_id, m in self.runs.items():
                if m.status == "completed":
                    continue
                if m.owner is None and m.available_at is not None and m.available_at <= now:
                    out.add(run_id)
                if m.owner is not None and m.lease_until is not None and m.lease_until <= now:
                    out.add(run_id)
            return out

        def record(self, run_id: str, event: Any) -> EventRecord:
            m = self.runs[run_id]
            rec = EventRecord(run_id, m.seq, event, self.clock.now)
            return rec

        @initialize()
        def start(self) -> None:
            pass

        @rule()
        def create_run(self) -> None:
            run_id = f"{self.prefix}-{next(self.counter)}"
            run, created = self.run_async(self.world.create_run(
                NewRun(run_id, "model_wf", msgspec.Raw(b'{"args":[],"kwargs":{}}'),
                       self.clock.now), lease_owner=None, lease_seconds=LEASE))
            assert created and run.status == "pending"
            self.runs[run_id] = ModelRun(available_at=self.clock.now)
            again, created_again = self.run_async(self.world.create_run(
                NewRun(run_id, "other", msgspec.Raw(b"null"), self.clock.now),
                lease_owner=None, lease_seconds=LEASE))
            assert not created_again and again.workflow_name == "model_wf"

        @precondition(lambda self: self.runs)
        @rule(data=st.data(), owner=st.sampled_from(OWNERS))
        def append_step(self, data: st.DataObject, owner: str) -> None:
            run_id = data.draw(st.sampled_from(sorted(self.runs)))
            m = self.runs[run_id]
            stale = data.draw(st.booleans()) and m.seq > 1
            if m.status == "completed":
                return
            cid = str(m.steps_completed + 1)
            first = m.seq - 1 if stale else m.seq
            records = [EventRecord(run_id, first, StepStarted(cid, "s", 1), self.clock.now),
                       EventRecord(run_id, first + 1, StepCompleted(cid, "s", 1,
                                                                     msgspec.Raw(b"1")),
                                   self.clock.now)]
            if m.status == "pending":
                records.insert(0, EventRecord(run_id, first, RunStarted(), self.clock.now))
                records = [EventRecord(run_id, first + i, r.event, r.created_at)
                           for i, r in enumerate(records)]
            if stale:
                with pytest.raises(LeaseLostError):
                    self.run_async(self.world.append_events(run_id, records))
                return
            self.run_async(self.world.append_events(run_id, records))
            m.seq += len(records)
            m.status = "running"
            m.steps_completed += 1

        @precondition(lambda self: self.runs)
        @rule(data=st.data())
        def create_hook(self, data: st.DataObject) -> None:
            run_id = data.draw(st.sampled_from(sorted(self.runs)))
            m = self.runs[run_id]
            if m.status == "completed":
                return
            token = f"tok-{uuid.uuid4().hex[:8]}"
            self.run_async(self.world.append_events(run_id, [self.record(
                run_id, HookCreated(f"h{m.seq}", token))]))
            m.seq += 1
            m.hooks.append(token)

        @precondition(lambda self: self.runs)
        @rule(data=st.data())
        def resume_hook(self, data: st.DataObject) -> None:
            tokens = [(t, r) for r, m in self.runs.items() for t in m.hooks]
            if not tokens or data.draw(st.booleans()):
                with pytest.raises(HookNotFoundError):
                    self.run_async(self.world.resume_hook(f"nope-{uuid.uuid4().hex}",
                                                          msgspec.Raw(b"1")))
                return
            token, run_id = data.draw(st.sampled_from(tokens))
            m = self.runs[run_id]
            if m.status == "completed":
                with pytest.raises((HookNotFoundError, RunFinishedError)):
                    self.run_async(self.world.resume_hook(token, msgspec.Raw(b"1")))
                return
            assert self.run_async(self.world.resume_hook(token, msgspec.Raw(b"1"))) == run_id
            m.inbox += 1
            if m.owner is None:
                m.available_at = self.clock.now

        @precondition(lambda self: self.runs)
        @rule(data=st.data())
        def take_inbox(self, data: st.DataObject) -> None:
            run_id = data.draw(st.sampled_from(sorted(self.runs)))
            m = self.runs[run_id]
            inbox = self.run_async(self.world.read_inbox(run_id))
            assert len(inbox) == m.inbox
            if inbox and m.status != "completed":
                self.run_async(self.world.append_events(run_id, [], inbox_ids=[inbox[0].id]))
                m.inbox -= 1

        @rule(owner=st.sampled_from(OWNERS), limit=st.integers(1, 3))
        def claim(self, owner: str, limit: int) -> None:
            allowed = self.claimable()
            claimed = self.run_async(self.world.claim_runs(owner, limit, LEASE))
            assert set(claimed) <= allowed, (claimed, allowed)
            assert len(claimed) == min(limit, len(allowed))
            for run_id in claimed:
                m = self.runs[run_id]
                m.owner = owner
                m.lease_until = self.clock.now + dt.timedelta(seconds=LEASE)

        @rule(owner=st.sampled_from(OWNERS))
        def renew(self, owner: str) -> None:
            held = self.run_async(self.world.renew_leases(owner, LEASE))
            expected = {r for r, m in self.runs.items()
                        if m.owner == owner and m.status != "completed"}
            assert set(held) >= set(self.held_by(owner))
            assert set(held) <= expected
            for run_id in held:
                self.runs[run_id].lease_until = self.clock.now + dt.timedelta(seconds=LEASE)

        @precondition(lambda self: self.runs)
        @rule(data=st.data(), delay=st.sampled_from([None, 0.0, 5.0, 30.0]))
        def release(self, data: st.DataObject, delay: float | None) -> None:
            run_id = data.draw(st.sampled_from(sorted(self.runs)))
            m = self.runs[run_id]
            if m.owner is None or m.status == "completed":
                return
            wake = None if delay is None else self.clock.now + dt.timedelta(seconds=delay)
            self.run_async(self.world.release_run(run_id, m.owner, wake))
            m.owner, m.lease_until = None, None
            m.available_at = self.clock.now if m.inbox else wake

        @rule(seconds=st.sampled_from([1.0, 6.0, 11.0]))
        def advance_clock(self, seconds: float) -> None:
            self.clock.now += dt.timedelta(seconds=seconds)

        @precondition(lambda self: self.runs)
        @rule(data=st.data())
        def complete(self, data: st.DataObject) -> None:
            run_id = data.draw(st.sampled_from(sorted(self.runs)))
            m = self.runs[run_id]
            if m.status == "completed":
                return
            self.run_async(self.world.append_events(run_id, [self.record(
                run_id, RunCompleted(msgspec.Raw(b'"done"')))]))
            m.seq += 1
            m.status = "completed"
            m.owner = None
            m.inbox = 0

        @precondition(lambda self: self.runs)
        @rule(data=st.data(), count=st.integers(1, 3))
        def write_stream(self, data: st.DataObject, count: int) -> None:
            run_id = data.draw(st.sampled_from(sorted(self.runs)))
            m = self.runs[run_id]
            start = max(0, len(m.stream) - 1)  # overlaps one stored chunk: kept as it was
            chunks = [(i, msgspec.Raw(str(i * 10).encode())) for i in range(start,
                                                                            start + count)]
            self.run_async(self.world.write_stream(run_id, "s", chunks))
            for i, _ in chunks:
                if i == len(m.stream):
                    m.stream.append(i * 10)

        @invariant()
        def observable_state_matches(self) -> None:
            for run_id, m in self.runs.items():
                run = self.run_async(self.world.get_run(run_id))
                assert run.status == m.status, (run_id, run.status, m.status)
                events = self.run_async(self.world.list_events(run_id))
                assert [e.seq for e in events] == list(range(m.seq))
                steps = self.run_async(self.world.list_steps(run_id))
                assert len(steps) == m.steps_completed
                assert all(s.status == "completed" and s.started_at and s.completed_at
                           for s in steps)
                assert (run.steps_total, run.steps_completed, run.steps_running) == (
                    m.steps_completed, m.steps_completed, 0)
                hooks = self.run_async(self.world.list_hooks(run_id))
                want = "disposed" if m.status == "completed" else "active"
                assert sorted(h.token for h in hooks) == sorted(m.hooks)
                assert all(h.status == want for h in hooks)
                chunks, _ = self.run_async(self.world.read_stream(run_id, "s"))
                assert [msgspec.json.decode(c.data) for c in chunks] == m.stream

    return WorldMachine


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_world_matches_the_protocol_model(kind: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("postgres_url") if kind == "postgres" else None
    machine = world_machine(kind, url)
    machine.TestCase.settings = settings(
        max_examples=15 if kind != "memory" else 300, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    machine.TestCase().runTest()
