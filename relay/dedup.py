"""Deduplication by (pixel, event_name, event_id): an event is sent at most once per window.

Before a batch is sent each event is claimed for that batch's message id. A claim held by
another batch makes the event a duplicate (counted, not sent). A claim held by this same batch
means a redelivery of the batch (a retry, or a worker killed before its ack): the event is sent
again unless it is already marked delivered, which happens right after Meta's answer, before the
ack. A dead-lettered event's claim says so (``dead:<batch>``): a redelivery of its batch skips
it, another copy of it is a duplicate, and an operator's requeue deletes the claim.

Claims are fields ``event_name:event_id`` of hashes per pixel, claim day and slot
(``keys.claim_bucket``), valued ``<claim ms>|<owner>``: a claim is looked up in the buckets of
the days the window covers, newest first, and counts only while younger than the window; a
bucket expires a day after the window. A claim key of the layout before (``dedup:<key>``) still
counts, so batches claimed before an upgrade are not sent twice after it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from redis import Redis

from relay import keys

# KEYS: claim buckets, then old claim keys. ARGV: owner, window ms, now ms, days D, bucket ttl,
# then per event: field, index of its newest bucket (the next D - 1 follow), old key index.
_LOOKUP = """
local owner, window, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local days, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local function find(name, first, old)
  for k = first, first + days - 1 do
    local v = redis.call('HGET', KEYS[k], name)
    if v then
      local ms, who = string.match(v, '^(%d+)|(.*)$')
      if now - tonumber(ms) <= window then
        return who
      end
    end
  end
  return redis.call('GET', KEYS[old])
end
"""

_CLAIM = _LOOKUP + """
local done, dead = 'done:' .. owner, 'dead:' .. owner
local result, touched = {}, {}
for i = 6, #ARGV, 3 do
  local name, first, old = ARGV[i], tonumber(ARGV[i+1]), tonumber(ARGV[i+2])
  local current = find(name, first, old)
  if not current then
    redis.call('HSET', KEYS[first], name, now .. '|' .. owner)
    touched[first] = true
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
for k in pairs(touched) do
  redis.call('EXPIRE', KEYS[k], ttl)
end
return result
"""

_MARK = """
-- KEYS: today's claim buckets. ARGV: value, bucket ttl, then per event: field, bucket index.
local value, ttl = ARGV[1], tonumber(ARGV[2])
local touched = {}
for i = 3, #ARGV, 2 do
  local k = tonumber(ARGV[i+1])
  redis.call('HSET', KEYS[k], ARGV[i], value)
  touched[k] = true
end
for k in pairs(touched) do
  redis.call('EXPIRE', KEYS[k], ttl)
end
return 1
"""


_RELEASE = """
-- KEYS: claim buckets, then old claim keys. ARGV: owner, days D, then per event: field, index
-- of its newest bucket (the next D - 1 follow), old key index.
local owner, days = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV, 3 do
  local name, first, old = ARGV[i], tonumber(ARGV[i+1]), tonumber(ARGV[i+2])
  for k = first, first + days - 1 do
    local v = redis.call('HGET', KEYS[k], name)
    if v and string.match(v, '^%d+|(.*)$') == owner then
      redis.call('HDEL', KEYS[k], name)
    end
  end
  if redis.call('GET', KEYS[old]) == owner then
    redis.call('DEL', KEYS[old])
  end
end
return 1
"""


class Claim(IntEnum):
    CLAIMED = 0  # ours to send
    DUPLICATE = 1  # another batch has (or had) it
    ALREADY_SENT = 2  # this batch delivered it before it was redelivered
    ALREADY_DEAD = 3  # this batch dead-lettered it before it was redelivered


class _Keys:
    """KEYS[] of one script call: each name once, referred to by its 1-based index."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}

    def index(self, name: str) -> int:
        if name not in self._index:
            self.names.append(name)
            self._index[name] = len(self.names)
        return self._index[name]


def claim_days(window_s: int) -> int:
    """How many claim days (buckets) a window spans, today's included."""
    return -(-window_s // 86_400) + 1


class Dedup:
    def __init__(self, client: Redis, window_s: int,
                 clock: Any = time.time) -> None:
        self._client = client
        self._window_s = window_s
        self._days = claim_days(window_s)
        self._bucket_ttl_s = window_s + 86_400
        self._clock = clock
        self._claim = client.register_script(_CLAIM)
        self._mark_script = client.register_script(_MARK)
        self._release = client.register_script(_RELEASE)

    def claim(self, owner: str, dedup_keys: Sequence[str]) -> list[Claim]:
        if not dedup_keys:
            return []
        now = int(self._clock() * 1000)
        today = keys.day_of(now)
        script_keys = _Keys()
        per_event = [(keys.ledger_field(dk), self._window_buckets(script_keys, dk, today))
                     for dk in dedup_keys]
        old = [script_keys.index(keys.dedup(dk)) for dk in dedup_keys]
        args: list[Any] = [owner, self._window_s * 1000, now, self._days, self._bucket_ttl_s]
        for (name, first), old_index in zip(per_event, old, strict=True):
            args += (name, first, old_index)
        result = self._claim(keys=script_keys.names, args=args)
        return [Claim(int(r)) for r in result]

    def release(self, owner: str, dedup_keys: Sequence[str]) -> None:
        """Drop the claims ``owner`` holds on these events (done or dead ones stay): its events
        go back to the inbox (a paused pixel, ``relay.breaker``) and will be claimed again by
        the batch that takes them next."""
        if not dedup_keys:
            return
        today = keys.day_of(int(self._clock() * 1000))
        script_keys = _Keys()
        args: list[Any] = [owner, self._days]
        for dk in dedup_keys:
            first = self._window_buckets(script_keys, dk, today)
            args += (keys.ledger_field(dk), first, script_keys.index(keys.dedup(dk)))
        self._release(keys=script_keys.names, args=args)

    def _window_buckets(self, script_keys: _Keys, dedup_key: str, today: int) -> int:
        """Add the claim buckets of ``dedup_key`` for the window's days (today first, the
        days before next, as the scripts read them); the index of today's."""
        pixel_id, _, event_id = keys.split_dedup_key(dedup_key)
        slot = keys.slot_of(event_id)
        first = script_keys.index(keys.claim_bucket(pixel_id, today, slot))
        for back in range(1, self._days):
            script_keys.index(keys.claim_bucket(pixel_id, today - back, slot))
        return first

    def mark_sent(self, owner: str, dedup_keys: Sequence[str]) -> None:
        self._mark(f"done:{owner}", dedup_keys)

    def mark_dead(self, owner: str, dedup_keys: Sequence[str]) -> None:
        self._mark(f"dead:{owner}", dedup_keys)

    def _mark(self, value: str, dedup_keys: Sequence[str]) -> None:
        """Write the claim's new value into today's bucket, newest first when looked up."""
        if not dedup_keys:
            return
        now = int(self._clock() * 1000)
        today = keys.day_of(now)
        script_keys = _Keys()
        args: list[Any] = [f"{now}|{value}", self._bucket_ttl_s]
        for dk in dedup_keys:
            pixel_id, _, event_id = keys.split_dedup_key(dk)
            bucket = keys.claim_bucket(pixel_id, today, keys.slot_of(event_id))
            args += (keys.ledger_field(dk), script_keys.index(bucket))
        self._mark_script(keys=script_keys.names, args=args)
