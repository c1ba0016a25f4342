"""Dramatiq's Redis broker, tuned for this relay.

Dramatiq's own crash recovery runs on 0.1% of commands and only after a 60 s heartbeat timeout,
which can take many minutes at low traffic. ``RelayBroker.recover`` is called every second by each
worker's pump thread: it refreshes this process's heartbeat (also while every thread is busy) and
runs the maintenance pass that returns a dead worker's unacked messages to their queue.

A message is never acked without its successor being stored: Dramatiq's ``Retries`` acks the
message after enqueueing the retry and only logs a failed enqueue, so a Redis outage at that
moment would delete the batch. ``PatientRetries`` (and the worker's deferrals) enqueue through
``enqueue_patiently``, which waits for Redis instead.

A fetch whose reply is lost (Redis shutting down after running it) leaves message ids in this
process's ack set that no consumer holds: nobody would ever run or requeue them while this
process lives. ``RelayBroker`` remembers what its fetches returned, and ``rescue_stranded``
requeues ids found in its ack sets that it never received, when two checks agree.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, cast

import dramatiq
import structlog
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import (
    AgeLimit,
    CurrentMessage,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)
from redis import Redis
from redis import exceptions as redis_errors

from relay import _dramatiq, keys
from relay._dramatiq import RedisConsumer
from relay.config import RelaySettings

log = structlog.get_logger("relay.broker")
MAX_DEAD_MESSAGE_TTL_MS = 7 * 86_400_000
ENQUEUE_BACKOFF_CAP_S = 5.0
REDIS_UNREACHABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError)
# Dramatiq's enqueue (HSET + RPUSH), made safe to run twice: the client sends it again when the
# reply is lost, and a second RPUSH of the id would have two threads run the batch at once.
# Every enqueue has a fresh redis_message_id, so an id already stored means "done already".
_ENQUEUE_ONCE = """
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('RPUSH', KEYS[1], ARGV[1])
end
"""


dq_name = _dramatiq.delay_queue


class RelayBroker(RedisBroker):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._held: defaultdict[str, set[str]] = defaultdict(set)  # fetched, not yet let go
        self._with_threads: defaultdict[str, set[str]] = defaultdict(set)  # of those, running
        self._held_lock = threading.Lock()
        self._suspects: dict[str, set[str]] = {}
        self._enqueue_once = self.client.register_script(_ENQUEUE_ONCE)

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> None:
        self._enqueue_once(keys=[_dramatiq.queue(queue_name), _dramatiq.messages(queue_name)],
                           args=[message_id, data])

    # -- consumers ----------------------------------------------------------------------------
    @property
    def consumer_class(self) -> type[RedisConsumer]:
        return _RelayConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """A consumer for ``queue_name``, after returning what the previous one dropped.

        Dramatiq's consumer thread replaces its consumer after a connection error and drops the
        messages it held in memory: prefetched ones not yet given to a worker thread, and, on a
        delay queue, every message waiting for its time. They stay in this process's ack set,
        where nobody would ever run them while this process lives.
        """
        with self._held_lock:
            dropped = self._held[queue_name] - self._with_threads[queue_name]
        if dropped:
            self.do_requeue(queue_name, *sorted(dropped))
            log.warning("dropped_messages_requeued", queue=queue_name, count=len(dropped))
        return super().consume(queue_name, prefetch, timeout)

    def given_to_threads(self, queue_name: str, message_id: str) -> None:
        """A consumer handed this message on: a worker thread has it (not on a delay queue,
        whose messages wait in the consumer thread's memory)."""
        if not queue_name.endswith(_dramatiq.DELAY_SUFFIX):
            with self._held_lock:
                self._with_threads[queue_name].add(message_id)

    # -- what this process holds --------------------------------------------------------------
    def do_fetch(self, queue_name: str, count: int) -> list[bytes]:
        payloads: list[bytes] = _dramatiq.dispatch(self, "fetch")(queue_name, count)
        ids = _dramatiq.redis_message_ids(payloads)
        with self._held_lock:
            self._held[queue_name].update(ids)
        return payloads

    def do_ack(self, queue_name: str, message_id: str) -> Any:
        result = _dramatiq.dispatch(self, "ack")(queue_name, message_id)
        self._let_go(queue_name, [message_id])  # only once Redis has it: a failed ack is retried
        return result

    def do_nack(self, queue_name: str, message_id: str) -> Any:
        result = _dramatiq.dispatch(self, "nack")(queue_name, message_id)
        self._let_go(queue_name, [message_id])
        return result

    def do_requeue(self, queue_name: str, *message_ids: str) -> Any:
        result = _dramatiq.dispatch(self, "requeue")(queue_name, *message_ids)
        self._let_go(queue_name, message_ids)
        return result

    def _let_go(self, queue_name: str, message_ids: Sequence[str]) -> None:
        with self._held_lock:
            self._held[queue_name].difference_update(message_ids)
            self._with_threads[queue_name].difference_update(message_ids)

    def rescue_stranded(self, queues: Iterable[str]) -> int:
        """Requeue ids in this process's ack sets that none of its fetches returned.

        An id counts as stranded when two consecutive calls find it (call this every several
        seconds: a fetch's reply takes milliseconds). Returns how many were requeued.
        """
        rescued = 0
        for queue in queues:
            for name in (queue, dq_name(queue)):
                key = _dramatiq.acks(self.broker_id, name)
                in_acks = {m.decode() for m in self.client.smembers(key)}
                with self._held_lock:
                    unknown = in_acks - self._held[name]
                stranded = unknown & self._suspects.get(name, set())
                self._suspects[name] = unknown - stranded
                if stranded:
                    self.do_requeue(name, *sorted(stranded))
                    log.warning("stranded_messages_requeued", queue=name, count=len(stranded))
                    rescued += len(stranded)
        return rescued

    # -- recovery -----------------------------------------------------------------------------
    def recover(self, queues: Iterable[str], maintenance: bool = True) -> None:
        """Heartbeat, plus maintenance unless told not to, for ``queues`` and their delay queues
        (a no-op requeue)."""
        for queue in queues:
            for name in (queue, dq_name(queue)):
                _dramatiq.maintain(self, name, int(time.time() * 1000), maintenance)


class _RelayConsumer(RedisConsumer):
    """Dramatiq's Redis consumer, telling the broker which messages reached worker threads, and
    treating a Redis timeout like a lost connection (Dramatiq only maps ConnectionError: an ack
    that timed out would otherwise be abandoned, its message left unacked for good)."""

    broker: RelayBroker

    def __next__(self) -> MessageProxy | None:
        try:
            message: MessageProxy | None = super().__next__()
        except redis_errors.TimeoutError as exc:
            raise ConnectionClosed(exc) from None
        if message is not None:
            self.broker.given_to_threads(self.queue_name, message.options["redis_message_id"])
        return message

    def ack(self, message: MessageProxy) -> None:
        try:
            super().ack(message)
        except redis_errors.TimeoutError as exc:
            raise ConnectionClosed(exc) from None

    def nack(self, message: MessageProxy) -> None:
        try:
            super().nack(message)
        except redis_errors.TimeoutError as exc:
            raise ConnectionClosed(exc) from None


class RecoveryGate:
    """Whether this worker's maintenance may requeue other workers' unacked messages now.

    While Redis is unreachable nobody can refresh a heartbeat, so right after an outage every
    live worker looks dead, and requeueing their batches would run them twice. Maintenance
    therefore waits one heartbeat timeout after this worker regains contact (and after it
    starts): by then a live worker has refreshed its heartbeat, and only silent ones are
    requeued. Contact counts as lost when this worker's own heartbeats paused for half a
    heartbeat timeout, whether its commands failed or stalled.
    """

    def __init__(self, heartbeat_timeout_s: float, clock: Any = time.monotonic) -> None:
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._clock = clock
        self._contact_since = self._last_contact = clock()

    def allows_maintenance(self) -> bool:
        now = self._clock()
        if now - self._last_contact > self.heartbeat_timeout_s / 2:
            self._contact_since = now
        return now - self._contact_since >= self.heartbeat_timeout_s

    def heartbeat_written(self) -> None:
        self._last_contact = self._clock()


def enqueue_patiently(broker: dramatiq.Broker, message: dramatiq.Message[Any],
                      delay_ms: int | None = None,
                      sleep: Any = time.sleep) -> dramatiq.Message[Any]:
    """Enqueue, retrying for as long as Redis is unreachable.

    Called by a worker thread that holds ``message`` unacked: waiting is safe (if the process
    is stopped meanwhile, the unacked message is recovered by another worker), giving up is
    not (the caller would ack it).
    """
    failures = 0
    while True:
        try:
            return broker.enqueue(message, delay=delay_ms)
        except REDIS_UNREACHABLE as exc:
            failures += 1
            log.warning("enqueue_waits_for_redis", batch=message.message_id, failures=failures,
                        error=type(exc).__name__)
            sleep(min(ENQUEUE_BACKOFF_CAP_S, 0.1 * 2 ** failures))


class _PatientlyEnqueuing:
    """A broker whose ``enqueue`` is ``enqueue_patiently``; everything else is the broker's."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self._broker = broker

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None
                ) -> dramatiq.Message[Any]:
        return enqueue_patiently(self._broker, message, delay)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)


class PatientRetries(Retries):
    """Dramatiq's ``Retries``, whose retry enqueue waits for Redis instead of failing."""

    def after_process_message(self, broker: dramatiq.Broker, message: MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None
                              ) -> None:
        super().after_process_message(cast(dramatiq.Broker, _PatientlyEnqueuing(broker)),
                                      message, result=result, exception=exception)


def retry_when(max_attempts: int):
    """Retry up to ``max_attempts`` attempts in all.

    Permanent Meta errors never get here (the deliverer dead-letters them and returns); what
    arrives is a ``TransientError`` or an unexpected failure such as Redis going away.
    """

    def should_retry(retries: int, exception: BaseException) -> bool:
        return retries + 1 < max_attempts

    return should_retry


def make_broker(client: Redis, settings: RelaySettings) -> RelayBroker:
    broker = RelayBroker(
        client=client,
        namespace=keys.DRAMATIQ_NAMESPACE,
        heartbeat_timeout=settings.heartbeat_timeout_ms,
        maintenance_chance=0,  # recover() does it on a clock instead of by chance
        dead_message_ttl=MAX_DEAD_MESSAGE_TTL_MS,
        middleware=[
            AgeLimit(),
            TimeLimit(time_limit=10 * 60_000),
            ShutdownNotifications(),
            PatientRetries(
                min_backoff=settings.min_backoff_ms,
                max_backoff=settings.max_backoff_ms,
                retry_when=retry_when(settings.max_attempts),
            ),
            CurrentMessage(),
        ],
    )
    dramatiq.set_broker(broker)
    return broker
