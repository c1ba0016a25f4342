"""Everything pixelrelay knows about Dramatiq's private Redis layout and classes, in one place.

The relay's crash recovery leans on parts of Dramatiq that are not its public API: the key
layout of ``dramatiq/brokers/redis/dispatch.lua``, the argument order of that script, the
private ``RedisBroker._dispatch`` and ``_RedisConsumer``, and the JSON form of an encoded
message (the inbox's BATCH script builds messages in Lua, ``RelayBroker.do_fetch`` reads their
ids back with a regex). Verified with dramatiq ``VERIFIED_VERSION``; ``pyproject.toml`` pins that
minor version, and ``tests/relay/test_dramatiq_contract.py`` checks every fact below against the
installed Dramatiq, so an upgrade that changes one fails in CI instead of in production.

Layout, for a queue ``q`` in namespace ``dramatiq`` (``relay.keys.DRAMATIQ_NAMESPACE``):

    dramatiq:q                       list   ids ready to run
    dramatiq:q.msgs                  hash   id -> encoded message (ready and in flight)
    dramatiq:q.DQ, dramatiq:q.DQ.msgs       the delay queue (retries), same shape
    dramatiq:q.XQ, dramatiq:q.XQ.msgs       dead letters (zset scored by ms, hash)
    dramatiq:__acks__.<broker_id>.<q>  set  ids fetched by one process and not yet acked
    dramatiq:__heartbeats__          zset   broker id -> last command time (ms)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.redis import _RedisConsumer as RedisConsumer

from relay.keys import DRAMATIQ_NAMESPACE, dramatiq_queue

__all__ = [
    "DELAY_SUFFIX",
    "HEARTBEATS",
    "MESSAGE_FIELDS",
    "VERIFIED_VERSION",
    "RedisConsumer",
    "acks",
    "acks_pattern",
    "dead_messages",
    "dead_queue",
    "delay_queue",
    "dispatch",
    "maintain",
    "messages",
    "queue",
    "redis_message_ids",
]

VERIFIED_VERSION = "2.2"  # major.minor this module was read from and tested with
DELAY_SUFFIX = ".DQ"
HEARTBEATS = f"{DRAMATIQ_NAMESPACE}:__heartbeats__"
# The fields of ``dramatiq.Message`` as encoded JSON; BATCH in relay/inbox.py writes them in Lua.
MESSAGE_FIELDS = frozenset({"queue_name", "actor_name", "args", "kwargs", "options",
                            "message_id", "message_timestamp"})
# In an encoded message; event payloads inside it are JSON strings, so their quotes are escaped.
_REDIS_MESSAGE_ID = re.compile(rb'"redis_message_id":"([^"]+)"')


queue = dramatiq_queue  # list of ids ready to run (``name`` may be a delay queue, ``q.DQ``)


def messages(name: str) -> str:
    """Hash id -> encoded message, for ready and in-flight messages of ``name``."""
    return f"{queue(name)}.msgs"


def delay_queue(name: str) -> str:
    """The queue name Dramatiq keeps ``name``'s delayed messages (retries) in."""
    return f"{name}{DELAY_SUFFIX}"


def dead_queue(name: str) -> str:
    """Sorted set of dead-lettered ids (score: ms) of ``name`` and of its delay queue."""
    return f"{queue(name.removesuffix(DELAY_SUFFIX))}.XQ"


def dead_messages(name: str) -> str:
    return f"{dead_queue(name)}.msgs"


def acks(broker_id: str, name: str) -> str:
    """Set of ids one broker (process) fetched from ``name`` and has not acked."""
    return f"{DRAMATIQ_NAMESPACE}:__acks__.{broker_id}.{name}"


def acks_pattern(name: str) -> str:
    """SCAN pattern for every process's ack set of ``name``."""
    return acks("*", name)


def redis_message_ids(payloads: Iterable[bytes | None]) -> set[str]:
    """The ``redis_message_id`` of each encoded message (a fetch returns None for a vanished
    id), read without decoding the whole batch."""
    return {m.group(1).decode() for p in payloads if p and (m := _REDIS_MESSAGE_ID.search(p))}


def dispatch(broker: RedisBroker, command: str) -> Callable[..., Any]:
    """Dramatiq's own call of its dispatch script for ``command`` (fetch, ack, nack, requeue)."""
    call: Callable[..., Any] = broker._dispatch(command)
    return call


def maintain(broker: RedisBroker, name: str, now_ms: int, maintenance: bool) -> None:
    """Run the dispatch script for ``name`` with a no-op requeue: it refreshes this broker's
    heartbeat and, with ``maintenance``, returns dead brokers' unacked messages to the queue.

    The argument order is dispatch.lua's: command, timestamp, queue, worker id, heartbeat
    timeout, dead message ttl, do_maintenance, max unpack size.
    """
    broker.scripts["dispatch"](
        keys=[broker.namespace],
        args=["requeue", now_ms, name, broker.broker_id, broker.heartbeat_timeout,
              broker.dead_message_ttl, int(maintenance), broker._max_unpack_size()],
    )
