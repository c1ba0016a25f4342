"""Per-pixel rate limits shared by every worker: token buckets in Redis, one Lua call per batch.

Two buckets per pixel (requests/s and events/s, each holding one second's worth). When Meta
answers with a throttling code the pixel's rates are halved (down to 1/32) and recover by
doubling every ``recovery_s`` without further throttling, so a throttled pixel slows down by
itself and comes back by itself. A batch that has to wait is put back with a delay instead of
blocking a worker thread, so other pixels keep flowing and no retry is spent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis

from relay import keys

_ACQUIRE = """
local req_key, ev_key, throttle_key = KEYS[1], KEYS[2], KEYS[3]
local req_rate, ev_rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local cost, now, recovery_ms = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local factor = 1.0
local t = redis.call('HMGET', throttle_key, 'factor', 'at')
if t[1] then
  factor = math.min(1.0, tonumber(t[1]) * 2 ^ ((now - tonumber(t[2])) / recovery_ms))
end
local function level(key, rate)
  local s = redis.call('HMGET', key, 'tokens', 'at')
  local burst = math.max(rate, 1)
  local tokens = tonumber(s[1]) or burst
  local at = tonumber(s[2]) or now
  return math.min(burst, tokens + (now - at) * rate / 1000), burst
end
req_rate, ev_rate = req_rate * factor, ev_rate * factor
local req_tokens, req_burst = level(req_key, req_rate)
local ev_tokens, ev_burst = level(ev_key, ev_rate)
local wait = 0
if req_tokens < 1 then
  wait = math.max(wait, math.ceil((1 - req_tokens) * 1000 / req_rate))
end
local need = math.min(cost, ev_burst)
if ev_tokens < need then
  wait = math.max(wait, math.ceil((need - ev_tokens) * 1000 / ev_rate))
end
if wait == 0 then
  req_tokens = req_tokens - 1
  ev_tokens = ev_tokens - cost
end
redis.call('HSET', req_key, 'tokens', req_tokens, 'at', now)
redis.call('HSET', ev_key, 'tokens', ev_tokens, 'at', now)
redis.call('PEXPIRE', req_key, 3600000)
redis.call('PEXPIRE', ev_key, 3600000)
return wait
"""

_THROTTLED = """
local key, now = KEYS[1], tonumber(ARGV[1])
local recovery_ms, floor, sent = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local factor = 1.0
local t = redis.call('HMGET', key, 'factor', 'at')
if t[1] then
  factor = math.min(1.0, tonumber(t[1]) * 2 ^ ((now - tonumber(t[2])) / recovery_ms))
  if sent < tonumber(t[2]) then
    -- sent before the last slow-down, at the old rate: already answered for
    return tostring(factor)
  end
end
factor = math.max(floor, factor / 2)
redis.call('HSET', key, 'factor', factor, 'at', now)
redis.call('PEXPIRE', key, recovery_ms * 20)
return tostring(factor)
"""


@dataclass(frozen=True, slots=True)
class PixelRates:
    requests_per_s: float
    events_per_s: float


class PixelLimiter:
    def __init__(self, client: Redis, recovery_s: float = 30.0, floor: float = 1 / 32) -> None:
        self._client = client
        self._recovery_ms = int(recovery_s * 1000)
        self._floor = floor
        self._acquire = client.register_script(_ACQUIRE)
        self._throttled = client.register_script(_THROTTLED)

    def acquire(self, pixel_id: str, rates: PixelRates, events: int,
                now_ms: int | None = None) -> int:
        """Take one request and ``events`` events; return 0, or the ms to wait first."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        wait = self._acquire(
            keys=[keys.rate_limit(pixel_id, "requests"), keys.rate_limit(pixel_id, "events"),
                  keys.throttle(pixel_id)],
            args=[rates.requests_per_s, rates.events_per_s, events, now, self._recovery_ms],
        )
        return int(wait)

    def throttled(self, pixel_id: str, now_ms: int | None = None,
                  sent_ms: int | None = None) -> float:
        """Meta said slow down: halve the pixel's rates; return the new factor.

        A request sent (``sent_ms``) before the last slow-down was sent at the old rate, so its
        throttling answer does not halve again: eight threads throttled at once slow the pixel
        down once, not eight times.
        """
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        sent = sent_ms if sent_ms is not None else now
        factor = self._throttled(keys=[keys.throttle(pixel_id)],
                                 args=[now, self._recovery_ms, self._floor, sent])
        return float(factor)

    def factor(self, pixel_id: str, now_ms: int | None = None) -> float:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        return self.factor_of(self._client.hmget(keys.throttle(pixel_id), "factor", "at"), now)

    @staticmethod
    def queue_factor(pipe: Any, pixel_id: str) -> None:
        """Ask for what ``factor_of`` needs in someone's pipeline."""
        pipe.hmget(keys.throttle(pixel_id), "factor", "at")

    def factor_of(self, raw: Sequence[Any] | None, now_ms: int) -> float:
        """The slow-down factor now from the throttle hash's (factor, at)."""
        if not raw or raw[0] is None:
            return 1.0
        factor, at = float(raw[0]), float(raw[1])
        return float(min(1.0, factor * 2 ** ((now_ms - at) / self._recovery_ms)))
