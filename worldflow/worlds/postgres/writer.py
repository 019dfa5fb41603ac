"""Group commit for Postgres: many runs' writes, one round trip, one transaction.

Callers queue a write (a typed Struct of messages.py: a created run, or appended events
with their projection ops) on the shared group-commit queue (worlds/batching.py). Each
batch is sent as one call of the server-side function `worldflow_apply`
(functions.sql): a single statement, so a single implicit transaction and a single
round trip however many runs it carries. Each caller's future resolves after that
commit, so a step's completion is durable before the workflow acts on it; on the live
path a step costs one such write, shared with every other run that wrote meanwhile.

Consecutive appends of one run in a batch (typically a step's `step_started`, queued
without waiting, and its `step_completed`) are sent as one append: one fence check and
one subtransaction on the server instead of two. Their outcome is shared, which changes
nothing: had the first failed, the second would have failed its fence. Appends with hook
operations are never merged (a hook token conflict fails only the write that hit it).

A batch of at least PLAIN_MIN plain writes (created runs, and appends of distinct runs
with run and step ops only: what runs write under load) goes to `worldflow_apply_plain`,
which applies it set-wise: one statement per table for the whole batch rather than a
subtransaction and several statements per write; a fifth less time on the server. If a
write of it is not plain after all (a run that exists, a lost lease, a step with a row),
that attempt is undone on the server and `worldflow_apply` takes the batch in the same
call, so each write still gets its own outcome.

A batch that is a single append of one step's start and completion in its first
attempt (possibly after the run's start) is what a run writes per step when it is
alone: the low-load case, where latency is all. It goes as one plain statement
(sql.STEP_APPEND): no plpgsql, no subtransaction, no skeleton to parse, a fifth less
time on the server. The statement writes only in the plain case (a new step, a fence
that holds); in any other (a fence that fails, a row or event already there, a value
the server refuses) it leaves the database as it was, and the batch goes through
`worldflow_apply`, which handles every case and says what went wrong.

A batch that is a single run created leased to its creator (start() with this
process's engine, at low load) goes as one plain statement too (sql.CREATE_RUN), which
creates only a run that is new; a run that exists, a race with another process or a
value the server refuses leaves it without effect, and worldflow_apply answers.

If the connection breaks, the writer reconnects and sends the same batch again. That
is safe when the first attempt's commit is unknown: a created run is found by its id,
and an append whose first event is already stored (same seq, type and time) counts as
done.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import asyncpg
import msgspec

from worldflow.errors import HookConflictError, LeaseLostError, RunNotFoundError, WorldError
from worldflow.worlds.batching import (
    BatchResult,
    Committed,
    Failed,
    GroupCommitQueue,
    Outcome,
)
from worldflow.worlds.postgres.messages import (
    AppendWrite,
    ApplyOutcome,
    CreateRunWrite,
    EventRow,
    decode_outcomes,
    encode_batch,
    encode_write,
    error_json,
)
from worldflow.worlds.postgres.sql import (
    CREATE_RUN,
    RUN_END,
    RUN_END_AFTER_STEP,
    STEP_APPEND,
    STEP_APPEND_OPENING,
    STEP_APPENDED,
    STEP_APPENDED_OPENING,
)
from worldflow.worlds.projection import (
    HookCreated,
    HookDisposed,
    RunFinished,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
    completions_after_starts,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from worldflow.worlds.batching import Fences, QueuedWrite
    from worldflow.worlds.postgres.messages import Write
    from worldflow.worlds.projection import ProjectionOp

__all__ = ["CONNECTION_ERRORS", "PostgresCommitter", "create_run_args", "plain_batch",
           "step_append_args"]

logger = logging.getLogger("worldflow.world.postgres")

APPLY = "SELECT worldflow_apply($1::jsonb, $2::text[], $3)"
APPLY_PLAIN = "SELECT worldflow_apply_plain($1::jsonb, $2::text[], $3)"
#: a batch of at least this many plain writes goes set-wise (`plain_batch`)
PLAIN_MIN = 4
#: the projection ops a plain append may carry (a step's are not sent: it is its events)
_PLAIN_OPS = (RunStarted, RunFinished, StepStarted, StepCompleted, StepRetrying, StepFailed)
#: a batch aborted as a whole by a conflict with another transaction: retried
TRANSIENT_ERRORS = (asyncpg.exceptions.DeadlockDetectedError,
                    asyncpg.exceptions.SerializationError)
#: a NUL character in a name or id: Postgres text (and jsonb) cannot hold it
NUL = "\\u0000"
MAX_BATCH = 1000
#: seconds writes nobody awaits may wait for a write that is awaited, to share its commit
LINGER = 0.002
# the server is away (restarting, shutting down, unreachable): retry, never fail the write
CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                     asyncpg.exceptions.OperatorInterventionError, ConnectionError,
                     asyncio.TimeoutError,
                     # raised by a connection that broke in the middle of an operation
                     asyncpg.exceptions.InternalClientError)
#: the outcome of a write sent as sql.STEP_APPEND
_APPENDED = Committed(ApplyOutcome(ok=True))


class PostgresCommitter:
    """Commits batches of typed writes with one call of `worldflow_apply`, through the
    shared group-commit queue; owns the writer's connection (reconnecting as needed)."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]],
                 channel: str) -> None:
        self._connect = connect
        self._channel = channel
        self._conn: asyncpg.Connection | None = None
        #: batches sent as sql.STEP_APPEND, and those of them it did not take
        self.step_appends = 0
        self.step_append_fallbacks = 0
        #: lone run ends sent as sql.RUN_END(_AFTER_STEP), and those it did not take
        self.run_ends = 0
        self.run_end_fallbacks = 0
        #: batches sent set-wise (worldflow_apply_plain)
        self.plain_batches = 0
        #: lone leased creates sent as sql.CREATE_RUN, and those it did not take
        self.lone_creates = 0
        self.lone_create_fallbacks = 0
        self.queue: GroupCommitQueue[Write] = GroupCommitQueue(
            self._commit, name="worldflow-postgres-writer", max_batch=MAX_BATCH,
            linger=LINGER, close_timeout=10.0, lead=True,
            closed_message=("the Postgres world is closed; open it first "
                            "(await world.open() or async with world)"))

    async def start(self) -> None:
        self._conn = await self._connect()
        self.queue.start()

    async def close(self) -> None:
        await self.queue.close()
        if self._conn is not None:
            try:
                await asyncio.wait_for(self._conn.close(), 5)
            except (TimeoutError, *CONNECTION_ERRORS):
                self._conn.terminate()
            self._conn = None

    async def _commit(self, batch: list[QueuedWrite[Write]], fences: Fences) -> BatchResult:
        writes, sent_as = merge_appends([w.request for w in batch])
        step_args = end_args = create_args = None
        if len(writes) == 1:
            step_args = step_append_args(writes[0])
            if step_args is None:
                end_args = run_end_args(writes[0], self._channel)
                create_args = create_run_args(writes[0])
        encoded: tuple[str, list[str]] | None = None
        delay = 0.05
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    try:
                        self._conn = await self._connect()
                    except WorldError as exc:  # the world's wording of a connect failure
                        raise ConnectionError(str(exc)) from None
                if step_args is not None:
                    if await self._step_append(self._conn, step_args):
                        return BatchResult([_APPENDED] * len(batch), committed=True)
                    step_args = None  # not taken: worldflow_apply handles it
                if end_args is not None:
                    if await self._run_end(self._conn, end_args):
                        return BatchResult([_APPENDED] * len(batch), committed=True)
                    end_args = None  # not taken: worldflow_apply handles it
                if create_args is not None:
                    if await self._create_run(self._conn, create_args):
                        outcome = Committed(ApplyOutcome(ok=True, created=True,
                                                         run_id=writes[0].run_id))
                        return BatchResult([outcome], committed=True)
                    create_args = None  # not taken: worldflow_apply handles it
                if encoded is None:
                    encoded = encode_batch(writes)
                    if NUL in encoded[0]:
                        return await self._commit_without_nul(batch, fences)
                skeleton, blobs = encoded
                plain = plain_batch(writes)
                result = await self._conn.fetchval(APPLY_PLAIN if plain else APPLY,
                                                   skeleton, blobs, self._channel)
                self.plain_batches += plain
                outcomes = [_outcome(o) for o in decode_outcomes(result)]
                return BatchResult([outcomes[i] for i in sent_as], committed=True)
            except CONNECTION_ERRORS as exc:
                if self.queue.closing and delay > 2:
                    error = WorldError(f"Postgres world: writes lost at close: {exc}")
                    return BatchResult([Failed(error) for _ in batch], committed=False)
                logger.warning("Postgres write failed (%s); reconnecting in %.2fs", exc, delay)
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except TRANSIENT_ERRORS as exc:
                # the whole batch was rolled back (a deadlock with another writer's batch,
                # which the server broke by aborting this one): send it again
                logger.info("Postgres write batch %s; sending it again", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except asyncpg.PostgresError as exc:
                error = WorldError(f"Postgres world: {type(exc).__name__}: {exc}")
                return BatchResult([Failed(error) for _ in batch], committed=False)

    async def _step_append(self, conn: asyncpg.Connection,
                           statement: tuple[str, tuple[object, ...], str]) -> bool:
        """Send a step's append as sql.STEP_APPEND; False: it wrote nothing (the case is
        not the plain one, or the statement failed), and worldflow_apply must take it."""
        self.step_appends += 1
        query, args, tag = statement
        if await _lone_statement(conn, query, args, tag=tag):
            return True
        self.step_append_fallbacks += 1
        return False

    async def _run_end(self, conn: asyncpg.Connection,
                       statement: tuple[str, tuple[object, ...]]) -> bool:
        """Send a run's end as sql.RUN_END(_AFTER_STEP); False: it wrote nothing, and
        worldflow_apply must take it."""
        self.run_ends += 1
        if await _lone_statement(conn, *statement):
            return True
        self.run_end_fallbacks += 1
        return False

    async def _create_run(self, conn: asyncpg.Connection, args: tuple[object, ...]) -> bool:
        """Send a lone leased create as sql.CREATE_RUN; False: it created nothing (the
        run exists, or the statement failed), and worldflow_apply must take it."""
        self.lone_creates += 1
        if await _lone_statement(conn, CREATE_RUN, args):
            return True
        self.lone_create_fallbacks += 1
        return False

    async def _commit_without_nul(self, batch: list[QueuedWrite[Write]],
                                  fences: Fences) -> BatchResult:
        """A batch in which some write names something with a NUL character: those
        writes fail (alone, with an error saying why), the others are committed."""
        bad = [NUL.encode() in encode_write(w.request) for w in batch]
        good = [w for w, is_bad in zip(batch, bad, strict=True) if not is_bad]
        result = (await self._commit(good, fences) if good
                  else BatchResult([], committed=False))
        outcomes = iter(result.outcomes)
        error = WorldError("Postgres world: a name, id or token contains a NUL character "
                           "(\\x00), which Postgres cannot store; the write was refused")
        return BatchResult([Failed(error) if is_bad else next(outcomes) for is_bad in bad],
                           committed=result.committed)


async def _lone_statement(conn: asyncpg.Connection, query: str,
                          args: tuple[object, ...], *, tag: str | None = None) -> bool:
    """Run one of the plain statements of a lone write; False: it wrote nothing, either
    by its own checks or because the server refused it (e.g. a unique violation: another
    process wrote first), and worldflow_apply must take the write and say what happened.
    It wrote if it returned a true value, or (`tag`) if its command tag is `tag`.
    A broken connection is raised, for the writer to reconnect and send again."""
    try:
        if tag is not None:
            return bool(await conn.execute(query, *args) == tag)
        return bool(await conn.fetchval(query, *args))
    except CONNECTION_ERRORS:
        raise
    except asyncpg.PostgresError as exc:
        logger.debug("a lone write's statement was not taken as is (%s)", exc)
        return False


def merge_appends(writes: list[Write]) -> tuple[list[Write], list[int]]:
    """The writes to send, with each append merged into the previous append of its run
    when that one continues it exactly (one write of the server's instead of two; a
    step's start and completion, merged, may go as sql.STEP_APPEND); and for each given
    write, the index of the sent write that carries it (its outcome)."""
    if len(writes) == 1:  # (a run alone: nothing to merge)
        return writes, [0]
    out: list[Write] = []
    sent_as: list[int] = []
    last_of_run: dict[str, int] = {}  # run id -> index in `out` of its latest append
    for write in writes:
        if isinstance(write, AppendWrite):
            index = last_of_run.get(write.run_id)
            if index is not None:
                earlier = out[index]
                assert isinstance(earlier, AppendWrite)
                if _mergeable(earlier, write):
                    out[index] = AppendWrite(
                        run_id=write.run_id, events=earlier.events + write.events,
                        ops=completions_after_starts(earlier.ops + write.ops),
                        inbox_ids=earlier.inbox_ids + write.inbox_ids,
                        finished_at=write.finished_at)
                    sent_as.append(index)
                    continue
            last_of_run[write.run_id] = len(out)
        sent_as.append(len(out))
        out.append(write)
    return out, sent_as


def step_append_args(write: Write) -> tuple[str, tuple[object, ...], str] | None:
    """sql.STEP_APPEND (or STEP_APPEND_OPENING), its parameters and the command tag it
    returns when it wrote, if `write` is a step's start and completion, alone or with
    its run's start before them (those events, their ops, nothing else); None
    otherwise."""
    if (not isinstance(write, AppendWrite) or write.finished_at is not None
            or write.inbox_ids or len(write.events) != len(write.ops)
            or not 2 <= len(write.events) <= 3):
        return None
    opening: EventRow | None = None
    if len(write.ops) == 3:
        first_op, started, completed = write.ops
        opening, first, second = write.events
        if (type(first_op) is not RunStarted or opening.event_type != "run_started"
                or first_op.at != opening.created_at or first.seq != opening.seq + 1):
            return None
    else:
        started, completed = write.ops
        first, second = write.events
    if not _one_step(write.run_id, started, completed, first, second):
        return None
    args = (write.run_id, first.correlation_id, first.created_at, second.created_at,
            first.seq, str(first.payload, "utf-8"), str(second.payload, "utf-8"))
    if opening is None:
        return STEP_APPEND, args, STEP_APPENDED
    return (STEP_APPEND_OPENING, (*args, str(opening.payload, "utf-8"), opening.created_at),
            STEP_APPENDED_OPENING)


def run_end_args(write: Write, channel: str) -> tuple[str, tuple[object, ...]] | None:
    """sql.RUN_END and its parameters if `write` is a run's end alone (its terminal
    event and op, nothing else), or sql.RUN_END_AFTER_STEP if the end follows a step's
    start and completion in its first attempt; None otherwise."""
    if (not isinstance(write, AppendWrite) or write.finished_at is None
            or write.inbox_ids or len(write.events) != len(write.ops)
            or len(write.events) not in (1, 3)):
        return None
    end, finished = write.events[-1], write.ops[-1]
    if (type(finished) is not RunFinished or finished.run_id != write.run_id
            or finished.at != end.created_at or end.created_at != write.finished_at
            or end.correlation_id is not None):
        return None
    args: tuple[object, ...] = (
        write.run_id, write.events[0].seq, end.event_type, str(end.payload, "utf-8"),
        end.created_at, finished.status,
        None if finished.output is None else str(finished.output, "utf-8"),
        None if finished.error is None else str(error_json(finished.error), "utf-8"),
        channel)
    if len(write.events) == 1:
        return RUN_END, args
    started, completed, _ = write.ops
    first, second, _ = write.events
    if (not _one_step(write.run_id, started, completed, first, second)
            or end.seq != second.seq + 1):
        return None
    return RUN_END_AFTER_STEP, (
        *args, first.correlation_id, first.created_at, second.created_at,
        str(first.payload, "utf-8"), str(second.payload, "utf-8"))


def _one_step(run_id: str, started: ProjectionOp, completed: ProjectionOp,
              first: EventRow, second: EventRow) -> bool:
    """`started` and `completed` (with their events `first` and `second`) are one
    step's start and completion, in run `run_id`, one after the other."""
    return (type(started) is StepStarted and type(completed) is StepCompleted
            and started.step_id == completed.step_id and started.run_id == run_id
            and first.event_type == "step_started" and second.event_type == "step_completed"
            and second.seq == first.seq + 1
            and started.correlation_id == first.correlation_id == second.correlation_id
            and started.at == first.created_at and completed.at == second.created_at)


def create_run_args(write: Write) -> tuple[object, ...] | None:
    """sql.CREATE_RUN's parameters if `write` creates a run leased to its creator;
    None otherwise (an unleased run also wakes other workers: worldflow_apply)."""
    if not isinstance(write, CreateRunWrite) or write.lease_owner is None:
        return None
    return (write.run_id, write.workflow_name, str(write.input, "utf-8"), write.created_at,
            write.queue, str(write.payload, "utf-8"), write.dedup_key, write.parent_run_id,
            None if not write.tags else str(msgspec.json.encode(write.tags), "utf-8"),
            write.job_prefix, write.now, write.lease_owner,
            None if write.started is None else str(write.started, "utf-8"),
            write.lease_expires_at)


def plain_batch(writes: list[Write]) -> bool:
    """The batch may go set-wise (`worldflow_apply_plain`, functions.sql): enough writes,
    each of another run, the appends without inbox items and with run and step ops
    only. The server checks this again, and what else a plain batch needs, and takes
    the batch write by write if it does not hold."""
    if len(writes) < PLAIN_MIN:
        return False
    runs = set()
    for write in writes:
        runs.add(write.run_id)
        if isinstance(write, AppendWrite) and (
                write.inbox_ids or not all(type(op) in _PLAIN_OPS for op in write.ops)):
            return False
    return len(runs) == len(writes)


def _mergeable(earlier: AppendWrite, later: AppendWrite) -> bool:
    return (earlier.finished_at is None and bool(earlier.events) and bool(later.events)
            and later.events[0].seq == earlier.events[-1].seq + 1
            and not any(isinstance(op, HookCreated | HookDisposed)
                        for op in (*earlier.ops, *later.ops)))


def _outcome(outcome: ApplyOutcome) -> Outcome:
    if outcome.ok:
        return Committed(outcome)
    message = outcome.message or "write failed"
    if outcome.error == "lease_lost":
        return Failed(LeaseLostError(message))
    if outcome.error == "hook_conflict":
        return Failed(HookConflictError(message))
    if outcome.error == "not_found":
        return Failed(RunNotFoundError(message))
    return Failed(WorldError(f"Postgres world: {message}"))
