"""Durable enqueue with group commit: Redis when it answers, the disk spool when it does not.

Handlers call ``await enqueuer.store(writes)``; it returns once the writes are durable. A single
writer task takes every write that arrived while the previous round trip was in flight and
stores them together (one EVALSHA, or one spool append + fsync), so concurrent requests share a
round trip and nothing runs synchronously on the event loop.

While the spool holds anything, new writes go to the spool too, so replay keeps arrival order.
A probe watches Redis; once it answers, the writer replays the spool segment by segment between
groups, then returns to Redis. Every ``adopt_interval_s`` the writer also adopts the spool
directories of workers that stopped while this one runs (see ``Spool.adopt_orphans``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Literal

import msgspec
import structlog

from collector.spool import Spool
from relay.errors import StorageError
from relay.inbox import EventWrite, Write, write_decoder, write_encoder

log = structlog.get_logger("collector.enqueue")

Destination = Literal["redis", "spool"]
StoreFn = Callable[[Sequence[Write]], Awaitable[None]]
PingFn = Callable[[], Awaitable[object]]
REPLAY_CHUNK = 2000
REPLAY_RETRY_S = 1.0  # after a failed replay (a file error), before the next attempt
REMOVAL_ATTEMPTS = 3  # refused removals of a replayed segment before it is set aside instead
ADOPT_INTERVAL_S = 30.0


class EnqueueObserver:
    """Hooks for metrics; the default does nothing."""

    def stored(self, destination: Destination, count: int, seconds: float) -> None: ...

    def spool_state(self, spooling: bool, pending_bytes: int) -> None: ...


class DurableEnqueuer:
    def __init__(self, store: StoreFn, ping: PingFn, spool: Spool, *, redis_timeout_s: float,
                 probe_interval_s: float, observer: EnqueueObserver | None = None,
                 adopt_interval_s: float = ADOPT_INTERVAL_S) -> None:
        self._store = store
        self._ping = ping
        self._spool = spool
        self._timeout = redis_timeout_s
        self._probe_interval = probe_interval_s
        self._observer = observer or EnqueueObserver()
        self._pending: list[tuple[Sequence[Write], asyncio.Future[Destination]]] = []
        self._wake = asyncio.Event()
        self._redis_up = True
        self._backlog = spool.has_pending()  # only the writer task changes it afterwards
        self._spooled_bytes = spool.pending_bytes()
        self._replayed: Path | None = None  # in Redis already but still on disk: not stored again
        self._removal_failures = 0
        self._adopt_interval = adopt_interval_s
        self._adopt_due = False
        self._adopt_timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None

    @property
    def spooling(self) -> bool:
        return not self._redis_up or self._backlog

    @property
    def redis_up(self) -> bool:
        return self._redis_up

    async def start(self) -> None:
        # Whatever a previous run left in the spool is replayed before anything new.
        self._redis_up = not self._backlog or await self._probe_once()
        if self._backlog:
            self._wake.set()  # replay without waiting for the first request
        self._writer = asyncio.create_task(self._write_loop(), name="enqueue-writer")
        self._prober = asyncio.create_task(self._probe_loop(), name="redis-probe")
        self._schedule_adoption()

    async def stop(self) -> None:
        """Store what is pending, then stop. Called on graceful shutdown."""
        self._closing = True
        self._wake.set()
        if self._writer:
            await self._writer
        if self._adopt_timer:
            self._adopt_timer.cancel()
        if self._prober:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        await asyncio.to_thread(self._spool.close)

    async def store(self, writes: Sequence[Write]) -> Destination:
        """Return once ``writes`` are durable; raise ``StorageError`` if they cannot be."""
        if self._closing:
            raise StorageError("the collector is shutting down")
        future: asyncio.Future[Destination] = asyncio.get_running_loop().create_future()
        self._pending.append((writes, future))
        self._wake.set()
        return await future

    # -- the writer ----------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._adopt_due and not self._closing:  # not stopping: it would give them up
                await self._adopt_orphans()
            replay_failed = False
            if self._redis_up and self._backlog:
                replay_failed = not await self._replay_guarded()
            group, self._pending = self._pending, []
            if group:
                await self._commit(group)
            if self._closing and not self._pending:
                return
            if self._redis_up and self._backlog:
                if replay_failed:  # try again shortly; new writes still wake the loop
                    asyncio.get_running_loop().call_later(REPLAY_RETRY_S, self._wake.set)
                else:
                    self._wake.set()  # keep replaying between groups

    async def _replay_guarded(self) -> bool:
        """Replay one segment; a file error is logged, never allowed to end the writer (every
        request waiting for it would wait forever)."""
        try:
            return await self._replay_one_segment()
        except Exception as exc:  # noqa: BLE001 - OSError from the disk, above all
            log.error("spool_replay_failed", error=type(exc).__name__, detail=str(exc))
            return False

    async def _commit(self, group: list[tuple[Sequence[Write], asyncio.Future[Destination]]]
                      ) -> None:
        writes = [w for batch, _ in group for w in batch]
        started = time.perf_counter()
        destination: Destination = "redis"
        error: Exception | None = None
        if self._redis_up and not self._backlog:
            try:
                await asyncio.wait_for(self._store(writes), self._timeout)
            except Exception as exc:  # noqa: BLE001 - any Redis failure means: spool it
                self._mark_down(exc)
                destination = "spool"
        else:
            destination = "spool"
        if destination == "spool":
            try:
                records = [write_encoder.encode(w) for w in writes]
                self._spooled_bytes += await asyncio.to_thread(self._spool.append, records)
                self._backlog = True
                self._observer.spool_state(True, self._spooled_bytes)
            except Exception as exc:  # noqa: BLE001 - whatever it is, the client must retry
                log.error("spool_write_failed", error=str(exc), events=len(writes))
                error = StorageError("neither Redis nor the disk spool accepted the event")
        events = sum(isinstance(w, EventWrite) for w in writes)  # click contexts are not events
        self._observer.stored(destination, events, time.perf_counter() - started)
        for _, future in group:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(destination)

    def _mark_down(self, exc: BaseException) -> None:
        if self._redis_up:
            log.warning("redis_unavailable_spooling", error=type(exc).__name__, detail=str(exc))
        self._redis_up = False
        self._observer.spool_state(True, self._spooled_bytes)

    async def _replay_one_segment(self) -> bool:
        """Store the oldest segment into Redis, then remove it; False to try again later."""
        segment = await asyncio.to_thread(self._spool.oldest_segment)
        if segment is None:
            self._backlog = False
            return True
        if segment != self._replayed:  # one whose removal failed is not stored a second time
            try:
                records = await asyncio.to_thread(self._spool.read_segment, segment)
            except OSError as exc:
                await self._quarantine(segment, f"unreadable: {exc}")
                return True
            if not await self._store_records(segment, records):
                return False
            self._replayed = segment
        return await self._remove_replayed(segment)

    async def _store_records(self, segment: Path, records: list[bytes]) -> bool:
        """Store a segment's records into Redis; False (Redis is marked down) if it failed."""
        writes = []
        for record in records:
            try:
                writes.append(write_decoder.decode(record))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("spool_record_undecodable", segment=segment.name, error=str(exc))
        try:
            for start in range(0, len(writes), REPLAY_CHUNK):
                chunk = writes[start : start + REPLAY_CHUNK]
                await asyncio.wait_for(self._store(chunk), max(self._timeout, 5.0))
        except Exception as exc:  # noqa: BLE001 - replay again later, from the segment start
            self._mark_down(exc)
            return False
        log.info("spool_segment_replayed", segment=segment.name, events=len(writes))
        return True

    async def _remove_replayed(self, segment: Path) -> bool:
        """Remove a segment whose writes are in Redis; False to try again later.

        Only the removal is tried again: storing the segment again would put every write in it
        into Redis once more per attempt, until Redis runs out of memory. After
        REMOVAL_ATTEMPTS refusals the segment is set aside; if even that fails, it stays
        remembered, so this process never stores it twice."""
        try:
            await asyncio.to_thread(self._spool.remove_segment, segment)
        except OSError as exc:
            self._removal_failures += 1
            log.error("spool_replayed_segment_not_removed", segment=str(segment),
                      attempt=self._removal_failures, error=type(exc).__name__,
                      detail=str(exc), note="its events are in Redis; it is not stored again")
            if self._removal_failures < REMOVAL_ATTEMPTS:
                return False
            await self._quarantine(segment, f"replayed, but it cannot be removed: {exc}")
            return True
        self._forget_replayed()
        await self._count_pending()
        return True

    def _forget_replayed(self) -> None:
        """The replayed segment left the spool: a later segment may be given its name."""
        self._replayed = None
        self._removal_failures = 0

    async def _quarantine(self, segment: Path, why: str) -> None:
        """Set a segment aside (renamed, kept for an operator) so the spool keeps draining."""
        kept = await asyncio.to_thread(self._spool.quarantine, segment)
        self._forget_replayed()
        log.error("spool_segment_quarantined", segment=str(kept), reason=why)
        await self._count_pending()

    async def _count_pending(self) -> None:
        """Recount the bytes waiting in the spool: replay goes on while there are any."""
        left = self._spooled_bytes = await asyncio.to_thread(self._spool.pending_bytes)
        self._backlog = left > 0
        self._observer.spool_state(self.spooling, left)

    # -- adopting the spools of workers that stopped -------------------------------------------
    def _schedule_adoption(self) -> None:
        self._adopt_timer = asyncio.get_running_loop().call_later(
            self._adopt_interval, self._adoption_due)

    def _adoption_due(self) -> None:
        self._adopt_due = True
        self._wake.set()

    async def _adopt_orphans(self) -> None:
        """Take over the segments of workers that stopped while this one runs, so they are
        replayed now, not at the next restart. Runs in the writer, as every spool change."""
        self._adopt_due = False
        try:
            adopted = await asyncio.to_thread(self._spool.adopt_orphans)
            if adopted:
                log.info("spool_orphans_adopted", segments=adopted)
                await self._count_pending()
        except Exception as exc:  # noqa: BLE001 - a disk error must not end the writer
            log.error("spool_adoption_failed", error=type(exc).__name__, detail=str(exc))
            self._backlog = True  # some segments may have moved first; replay finds out
        self._schedule_adoption()

    # -- the probe -----------------------------------------------------------------------------
    async def _probe_once(self) -> bool:
        try:
            await asyncio.wait_for(self._ping(), self._timeout)
        except Exception:  # noqa: BLE001 - down is down, whatever the reason
            return False
        return True

    async def _probe_loop(self) -> None:
        # Not `while True`: Python 3.11's wait_for swallows a cancel that lands just as the ping
        # finishes, and stop() would then wait for this loop forever.
        while not self._closing:
            await asyncio.sleep(self._probe_interval)
            if self._redis_up:
                continue
            if await self._probe_once():
                log.info("redis_available_replaying")
                self._redis_up = True
                self._wake.set()
