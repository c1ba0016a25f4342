"""Dead letters: events that will not be delivered without an operator, with the reason why.

Kept per event (not per batch) so one bad event does not hide its batch-mates, for
``ledger_ttl_days``. ``requeue`` puts an event back into its queue's inbox in one atomic step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from redis import Redis

from relay import keys
from relay.events import Envelope, decode_envelope, encode

_REQUEUE = """
local prefix, dedup_key, queue, pixel = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local record_key = prefix .. ':dead:' .. dedup_key
local payload = redis.call('HGET', record_key, 'envelope')
if not payload then
  return 0
end
redis.call('RPUSH', prefix .. ':inbox:' .. queue .. ':' .. pixel, payload)
redis.call('SADD', prefix .. ':inbox:' .. queue, pixel)
redis.call('DEL', record_key, prefix .. ':dedup:' .. dedup_key)
redis.call('ZREM', prefix .. ':dead', dedup_key)
redis.call('SET', prefix .. ':state:' .. dedup_key, 'requeued', 'KEEPTTL')
return 1
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    dedup_key: str
    envelope: Envelope
    reason: dict[str, Any]
    dead_at_ms: int


class DeadLetters:
    def __init__(self, client: Redis, ttl_s: int) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._requeue = client.register_script(_REQUEUE)

    def add(self, envelopes: Sequence[Envelope], reason: dict[str, Any]) -> None:
        now = int(time.time() * 1000)
        reason_json = msgspec.json.encode(reason)
        pipe = self._client.pipeline(transaction=True)
        for env in envelopes:
            key = keys.dead_letter(env.dedup_key)
            pipe.hset(key, mapping={"envelope": encode(env), "reason": reason_json,
                                    "dead_at_ms": now})
            pipe.expire(key, self._ttl_s)
            pipe.zadd(keys.dead_letters(), {env.dedup_key: now})
        pipe.zremrangebyscore(keys.dead_letters(), 0, now - self._ttl_s * 1000)
        pipe.execute()

    def count(self) -> int:
        return int(self._client.zcard(keys.dead_letters()))

    def list(self, offset: int = 0, limit: int = 50) -> list[DeadLetter]:
        names = self._client.zrevrange(keys.dead_letters(), offset, offset + limit - 1)
        result = []
        for raw in names:
            dk = raw.decode()
            record = self._client.hgetall(keys.dead_letter(dk))
            if not record:
                continue
            result.append(DeadLetter(
                dedup_key=dk,
                envelope=decode_envelope(record[b"envelope"]),
                reason=msgspec.json.decode(record[b"reason"]),
                dead_at_ms=int(record[b"dead_at_ms"]),
            ))
        return result

    def get(self, dedup_key: str) -> DeadLetter | None:
        record = self._client.hgetall(keys.dead_letter(dedup_key))
        if not record:
            return None
        return DeadLetter(dedup_key, decode_envelope(record[b"envelope"]),
                          msgspec.json.decode(record[b"reason"]),
                          int(record[b"dead_at_ms"]))

    def requeue(self, dedup_key: str, queue: str) -> bool:
        """Move one dead event back into its queue's inbox; False if it is not dead."""
        letter = self.get(dedup_key)
        if letter is None:
            return False
        done = self._requeue(keys=[keys.PREFIX],
                             args=[dedup_key, queue, letter.envelope.pixel_id])
        return bool(done)
