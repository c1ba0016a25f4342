"""Durable enqueue with group commit: Redis when it answers, the disk spool when it does not.

Handlers call ``await enqueuer.store(writes)``; it returns once the writes are durable. A single
writer task takes every write that arrived while the previous round trip was in flight and
stores them together (one EVALSHA, or one spool append + fsync), so concurrent requests share a
round trip and nothing runs synchronously on the event loop.

While the spool holds anything, new writes go to the spool too, so replay keeps arrival order.
A probe watches Redis; once it answers, the writer replays the spool segment by segment between
groups, then returns to Redis.
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


class EnqueueObserver:
    """Hooks for metrics; the default does nothing."""

    def stored(self, destination: Destination, count: int, seconds: float) -> None: ...

    def spool_state(self, spooling: bool, pending_bytes: int) -> None: ...


class DurableEnqueuer:
    def __init__(self, store: StoreFn, ping: PingFn, spool: Spool, *, redis_timeout_s: float,
                 probe_interval_s: float, observer: EnqueueObserver | None = None) -> None:
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

    async def stop(self) -> None:
        """Store what is pending, then stop. Called on graceful shutdown."""
        self._closing = True
        self._wake.set()
        if self._writer:
            await self._writer
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
            await self._replay_one_segment()
        except Exception as exc:  # noqa: BLE001 - OSError from the disk, above all
            log.error("spool_replay_failed", error=type(exc).__name__, detail=str(exc))
            return False
        return True

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

    async def _replay_one_segment(self) -> None:
        segment = await asyncio.to_thread(self._spool.oldest_segment)
        if segment is None:
            self._backlog = False
            return
        try:
            records = await asyncio.to_thread(self._spool.read_segment, segment)
        except OSError as exc:
            await self._quarantine(segment, f"unreadable: {exc}")
            return
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
            return
        await asyncio.to_thread(self._spool.remove_segment, segment)
        left = self._spooled_bytes = await asyncio.to_thread(self._spool.pending_bytes)
        self._backlog = left > 0
        log.info("spool_segment_replayed", events=len(writes), pending_bytes=left)
        self._observer.spool_state(left > 0, left)

    async def _quarantine(self, segment: Path, why: str) -> None:
        """Set a segment aside (renamed, kept for an operator) so the spool keeps draining."""
        kept = await asyncio.to_thread(self._spool.quarantine, segment)
        log.error("spool_segment_quarantined", segment=str(kept), reason=why)
        self._backlog = await asyncio.to_thread(self._spool.has_pending)

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
