"""Deduplication by (pixel, event_name, event_id): an event is sent at most once per window.

Before a batch is sent each event is claimed for that batch's message id. A claim held by
another batch makes the event a duplicate (counted, not sent). A claim held by this same batch
means a redelivery of the batch (a retry, or a worker killed before its ack): the event is sent
again unless it is already marked delivered, which happens right after Meta's answer, before the
ack. A dead-lettered event's claim says so (``dead:<batch>``): a redelivery of its batch skips
it, another copy of it is a duplicate, and an operator's requeue deletes the claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

from redis import Redis

from relay import keys

_CLAIM = """
local prefix, owner, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])
local done, dead = 'done:' .. owner, 'dead:' .. owner
local result = {}
for i = 3, #ARGV do
  local key = prefix .. ':dedup:' .. ARGV[i]
  local current = redis.call('GET', key)
  if not current then
    redis.call('SET', key, owner, 'EX', ttl)
    result[#result + 1] = 0
  elseif current == owner then
    result[#result + 1] = 0
  elseif current == done then
    result[#result + 1] = 2
  elseif current == dead then
    result[#result + 1] = 3
  else
    result[#result + 1] = 1
  end
end
return result
"""


class Claim(IntEnum):
    CLAIMED = 0  # ours to send
    DUPLICATE = 1  # another batch has (or had) it
    ALREADY_SENT = 2  # this batch delivered it before it was redelivered
    ALREADY_DEAD = 3  # this batch dead-lettered it before it was redelivered


class Dedup:
    def __init__(self, client: Redis, window_s: int) -> None:
        self._client = client
        self._window_s = window_s
        self._claim = client.register_script(_CLAIM)

    def claim(self, owner: str, dedup_keys: Sequence[str]) -> list[Claim]:
        if not dedup_keys:
            return []
        result = self._claim(keys=[keys.PREFIX], args=[owner, self._window_s, *dedup_keys])
        return [Claim(int(r)) for r in result]

    def mark_sent(self, owner: str, dedup_keys: Sequence[str]) -> None:
        self._mark(f"done:{owner}", dedup_keys)

    def mark_dead(self, owner: str, dedup_keys: Sequence[str]) -> None:
        self._mark(f"dead:{owner}", dedup_keys)

    def _mark(self, value: str, dedup_keys: Sequence[str]) -> None:
        if not dedup_keys:
            return
        pipe = self._client.pipeline(transaction=False)
        for dk in dedup_keys:
            pipe.set(keys.dedup(dk), value, ex=self._window_s)
        pipe.execute()
