"""The engine: claims runs from the world's queue and supervises their actors.

One engine runs per started world in a process. It owns every task it starts: a root
task holds a task group with the claim loop, the lease heartbeat, the run actors and
their steps. Runs started in this process are leased to it at creation and start at
once (no queue round trip); other runs are claimed when the world signals work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import TYPE_CHECKING, Any

from worldflow.core import registry, telemetry
from worldflow.core.actor import RunActor, cancel_without_code
from worldflow.core.logs import configure_logging, log_event
from worldflow.core.schedules import Scheduler
from worldflow.core.steps import StepRunner, run_step_attempt
from worldflow.errors import LeaseLostError

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from worldflow.core.events import EventRecord
    from worldflow.core.records import RunRecord
    from worldflow.core.world import World

__all__ = ["Engine"]

logger = logging.getLogger("worldflow.engine")

#: seconds between queue polls when no wake-up arrives (a fallback, not the hot path)
POLL_INTERVAL = 1.0
#: the longest backoff before replaying a run whose actor keeps failing
MAX_CRASH_DELAY = 300.0
#: runs whose failures are remembered for the backoff
MAX_CRASH_RECORDS = 10_000


class Engine:
    def __init__(self, world: World, *, keep_alive: float = 1.0) -> None:
        self.world = world
        self.worker_id = f"{_hostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.keep_alive = keep_alive
        self.step_slots = asyncio.Semaphore(world.queue_concurrency)
        #: by workflow name: the step call its runs ended on, and how many runs in a row
        #: did (core.actor_live: a completion elsewhere is appended before it is taken)
        self.end_calls: dict[str, tuple[str, int]] = {}
        self.actors: dict[str, RunActor] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._root: asyncio.Task[None] | None = None
        self._stopping = False
        self._was_full = False
        #: actors waiting for a queue slot: they hold no workflow and do not count
        #: against queue_concurrency (up to 10x as many may wait)
        self.parked = 0
        #: seconds before a run whose actor crashed (e.g. a storage error) is replayed
        self.crash_retry_delay = 1.0
        #: consecutive failures of each run's actor in this process (for the backoff)
        self._crashes: dict[str, int] = {}
        self.log_events = configure_logging() <= logging.DEBUG
        #: runs one step attempt and returns its outcome event; the HTTP transport
        #: replaces it to send steps to another process
        self.step_runner: StepRunner = run_step_attempt
        telemetry.load()  # OpenTelemetry is looked for once, before any run
        #: starts the runs of the world's cron schedules (a task of this engine)
        self.scheduler = Scheduler(self)

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._root = asyncio.create_task(self._main(ready), name="worldflow engine")
        await ready
        self.world.set_inbox_listener(self._on_inbox)

    async def _main(self, ready: asyncio.Future[None]) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await self._expire_dead_local_leases()
                tg.create_task(self._claim_loop(), name="worldflow claim loop")
                tg.create_task(self._heartbeat(), name="worldflow lease heartbeat")
                await self._declare_schedules()
                tg.create_task(self.scheduler.run(), name="worldflow scheduler")
                ready.set_result(None)
        except asyncio.CancelledError:
            if not self._stopping:
                # cancelled from outside: the event loop is ending (asyncio.run returned)
                # without `world.close()`; close the world now, so that no connection or
                # driver thread outlives the loop and keeps the process alive
                self._stopping = True
                try:
                    await self.world.close()
                except Exception:
                    logger.debug("closing the world as its event loop ended failed",
                                 exc_info=True)
            raise

    @property
    def finished(self) -> bool:
        """True once the engine has stopped (or its event loop has ended)."""
        return self._root is not None and self._root.done()

    async def stop(self) -> None:
        """Stop every actor (their runs go back to the queue at once), then the engine."""
        self._stopping = True
        self.world.set_inbox_listener(None)
        tasks = [actor.task for actor in self.actors.values() if actor.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        root = self._root
        if root is not None and root is not asyncio.current_task():
            root.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await root

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        assert self._tg is not None, "engine not started"
        return self._tg.create_task(coro, name=name)

    # -- actors --------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        limit = self.world.queue_concurrency
        return max(0, min(limit - (len(self.actors) - self.parked),
                          10 * limit - len(self.actors)))

    @property
    def has_capacity(self) -> bool:
        return not self._stopping and self.free_slots > 0

    def dispatch(self, run_id: str, *, fresh: RunRecord | None = None,
                 trace_context: dict[str, str] | None = None) -> None:
        """Start the actor of a run this worker holds the lease of (`fresh`: just created
        here, so nothing can be waiting in its inbox yet; `trace_context`: the one its
        `run_created` stores, which a fresh run's actor does not read back)."""
        if run_id in self.actors or self._stopping:
            return
        actor = RunActor(self, run_id, fresh=fresh, trace_context=trace_context)
        self.actors[run_id] = actor
        actor.task = self.spawn(self._supervise(actor), name=f"run {run_id}")

    async def _supervise(self, actor: RunActor) -> None:
        run_id = actor.run_id
        try:
            await actor.run()
        except asyncio.CancelledError:
            if self._stopping:  # shutting down: let another worker (or our restart) go on
                await asyncio.shield(self._release_quietly(run_id, 0.0))
            raise
        except LeaseLostError as exc:
            # another worker took it over, or one of our own writes for it was lost: give
            # it back if it is still ours (a no-op otherwise), to be replayed
            logger.warning("run %s: stopped: %s", run_id, exc)
            await asyncio.shield(self._release_quietly(run_id, self._crash_delay(run_id)))
        except Exception:
            delay = self._crash_delay(run_id)
            logger.exception("run %s: actor crashed; the run will be replayed in %gs", run_id,
                             delay)
            await asyncio.shield(self._after_crash(run_id, delay))
        else:
            self._crashes.pop(run_id, None)
            instance = actor.ended_instance()
            if instance is not None:
                instance.release_failure()
        finally:
            self.actors.pop(run_id, None)
            if self._was_full:
                self._was_full = False
                self.world.notify_work()

    def _crash_delay(self, run_id: str) -> float:
        """Exponential backoff for a run whose actor keeps failing: no hot loop."""
        count = self._crashes.pop(run_id, 0) + 1
        self._crashes[run_id] = count  # (re)inserted last: the oldest entries go first
        while len(self._crashes) > MAX_CRASH_RECORDS:
            del self._crashes[next(iter(self._crashes))]
        return float(min(MAX_CRASH_DELAY, self.crash_retry_delay * 2 ** min(count - 1, 20)))

    async def _after_crash(self, run_id: str, delay: float) -> None:
        # a cancel waiting for the run takes effect now, even if its code cannot run
        try:
            if await cancel_without_code(self.world, run_id):
                self._crashes.pop(run_id, None)
                return
        except Exception:
            logger.warning("run %s: could not apply its pending cancel", run_id,
                           exc_info=True)
        await self._release_quietly(run_id, delay)

    async def _release_quietly(self, run_id: str, delay: float) -> None:
        import datetime as dt

        try:
            await self.world.release_run(run_id, self.worker_id,
                                         self.world.now() + dt.timedelta(seconds=delay),
                                         backoff=delay > 0)
        except Exception:
            logger.warning("run %s: could not release its lease; it will expire", run_id,
                           exc_info=True)

    def local_end(self, run_id: str) -> asyncio.Future[RunRecord | None] | None:
        """If an actor of this process holds the run: a future of the run's final record,
        set once its terminal event has committed (None if the actor stops without ending
        the run). None if no actor here holds it."""
        actor = self.actors.get(run_id)
        return None if actor is None else actor.ended

    def _on_inbox(self, run_id: str) -> None:
        actor = self.actors.get(run_id)
        if actor is not None:
            actor.inbox_changed()

    def log_event(self, record: EventRecord) -> None:
        log_event(record)

    # -- queue ---------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        world = self.world
        while True:
            free = self.free_slots
            if free <= 0:
                # full: an actor that ends (or parks) signals work
                self._was_full = True
                await world.wait_for_work(POLL_INTERVAL)
                continue
            try:
                claimed = await world.claim_runs(self.worker_id, free, world.lease_seconds,
                                                 workflows=set(registry._workflows))
            except Exception:
                logger.warning("claiming runs failed; retrying", exc_info=True)
                await asyncio.sleep(POLL_INTERVAL)
                continue
            for run_id in claimed:
                self.dispatch(run_id)
            if len(claimed) == free:
                continue  # there may be more
            timeout = POLL_INTERVAL
            try:
                next_wake = await world.next_wake_at(workflows=set(registry._workflows))
            except Exception:
                next_wake = None
            if next_wake is not None:
                until = (next_wake - world.now()).total_seconds()
                # a job that is due but was not claimable (e.g. just claimed elsewhere)
                # must not make this loop spin
                timeout = min(timeout, max(0.01, until))
                # also on the world's timers, which a test clock moves without waiting
                wake = world.timers.call_at(next_wake, world.notify_work)
                try:
                    await world.wait_for_work(timeout)
                finally:
                    wake.cancel()
                continue
            await world.wait_for_work(timeout)

    async def _heartbeat(self) -> None:
        world = self.world
        while True:
            await asyncio.sleep(world.lease_seconds / 3)
            # only the actors that were here before the renewal can be judged by its
            # answer: a run created or claimed here while it ran may be missing from it
            actors = dict(self.actors)
            try:
                held = await world.renew_leases(self.worker_id, world.lease_seconds)
                await world.renew_slots(self.worker_id + "/", world.lease_seconds)
            except Exception:
                logger.warning("renewing leases failed", exc_info=True)
                continue
            for run_id, actor in actors.items():
                if (run_id not in held and self.actors.get(run_id) is actor
                        and actor.task is not None and not actor.releasing):
                    logger.warning("run %s: lease lost; stopping its actor", run_id)
                    actor.task.cancel()
            # a run still leased here whose actor is gone (it crashed and could not give
            # the run back, e.g. while the database was down) is restarted by replay; not
            # one whose actor was here when the renewal began (it gave the run back or
            # ended it meanwhile, after the renewal read its lease)
            for run_id in held - actors.keys() - self.actors.keys():
                if not self._stopping and self.free_slots > 0:
                    logger.info("run %s: leased here without an actor; replaying it", run_id)
                    self.dispatch(run_id)

    async def _declare_schedules(self) -> None:
        """Schedules declared in code exist once the engine has started."""
        try:
            await self.scheduler.declare()
        except Exception:
            logger.warning("creating the schedules declared with @workflow(schedule=...) "
                           "failed", exc_info=True)

    async def _expire_dead_local_leases(self) -> None:
        """Leases of dead processes on this host are taken back at once, not after expiry."""
        host = _hostname()
        dead = []
        try:
            owners = await self.world.lease_owners()
        except Exception:
            return
        for owner in owners:
            owner_host, _, rest = owner.partition(":")
            pid_text = rest.partition(":")[0]
            if owner_host != host or not pid_text.isdigit() or owner == self.worker_id:
                continue
            if int(pid_text) == os.getpid() or not _pid_alive(int(pid_text)):
                dead.append(owner)
        if dead:
            count = await self.world.expire_leases(dead)
            logger.info("took back %d run(s) from %d stopped worker(s)", count, len(dead))


def _hostname() -> str:
    """This worker's host in lease owner ids (WORLDFLOW_HOSTNAME overrides it, e.g. for
    containers that share a pid namespace but not a host name)."""
    return os.environ.get("WORLDFLOW_HOSTNAME") or socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process its parent has not reaped yet is a zombie: dead
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
