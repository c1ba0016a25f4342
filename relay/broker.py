"""Dramatiq's Redis broker, tuned for this relay.

Dramatiq's own crash recovery runs on 0.1% of commands and only after a 60 s heartbeat timeout,
which can take many minutes at low traffic. ``RelayBroker.recover`` is called every second by each
worker's pump thread: it refreshes this process's heartbeat (also while every thread is busy) and
runs the maintenance pass that returns a dead worker's unacked messages to their queue.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    CurrentMessage,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)
from redis import Redis

from relay import keys
from relay.config import RelaySettings

MAX_DEAD_MESSAGE_TTL_MS = 7 * 86_400_000


def dq_name(queue: str) -> str:
    return f"{queue}.DQ"


class RelayBroker(RedisBroker):
    def recover(self, queues: Iterable[str]) -> None:
        """Heartbeat plus maintenance for ``queues`` and their delay queues (a no-op requeue)."""
        dispatch = self.scripts["dispatch"]
        for queue in queues:
            for name in (queue, dq_name(queue)):
                dispatch(
                    keys=[self.namespace],
                    args=["requeue", int(time.time() * 1000), name, self.broker_id,
                          self.heartbeat_timeout, self.dead_message_ttl, 1,
                          self._max_unpack_size()],
                )


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
            Retries(
                min_backoff=settings.min_backoff_ms,
                max_backoff=settings.max_backoff_ms,
                retry_when=retry_when(settings.max_attempts),
            ),
            CurrentMessage(),
        ],
    )
    dramatiq.set_broker(broker)
    return broker
