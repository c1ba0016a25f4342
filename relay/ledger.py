"""The event ledger: each event's life, its current state, per-minute counters and latencies.

Per event (key: pixel:event_name:event_id) a list of JSON entries (queued, attempt, delivered,
dead, duplicate, deferred) and a state string, both expiring after ``ledger_ttl_days``; a
duplicate only sets the state when there is none, so a delivered event stays 'delivered'; an index
from event_id to its keys for ``pixelrelay trace``. Per minute a hash of counters
(``<what>:<pixel>:<event_name>``), a histogram of Meta's request latency per pixel and one of
received-to-delivered delay per pixel and event name: what the dashboard reads.
Writes are one Lua call per batch, so the ledger costs the worker little per event.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from redis import Redis

from relay import keys

State = Literal["queued", "attempt", "delivered", "dead", "duplicate", "deferred", "requeued"]
FINAL_STATES = frozenset({"delivered", "dead", "duplicate"})
LATENCY_BUCKETS_MS = (25, 50, 100, 200, 400, 800, 1600, 3200, 6400)
DELAY_BUCKETS_MS = (250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000)
COUNTER_TTL_S = 8 * 86_400

_RECORD = """
local prefix, ttl = KEYS[1], tonumber(ARGV[1])
local i = 2
while i <= #ARGV do
  local dedup_key, event_id, state, entry = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  i = i + 4
  local life = prefix .. ':life:' .. dedup_key
  redis.call('RPUSH', life, entry)
  redis.call('EXPIRE', life, ttl)
  if state == 'duplicate' then
    -- a later copy must not hide what happened to the first: it only names a state never set
    redis.call('SET', prefix .. ':state:' .. dedup_key, state, 'EX', ttl, 'NX')
  elseif state ~= 'attempt' then
    redis.call('SET', prefix .. ':state:' .. dedup_key, state, 'EX', ttl)
  end
  local index = prefix .. ':eventid:' .. event_id
  redis.call('SADD', index, dedup_key)
  redis.call('EXPIRE', index, ttl)
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Entry:
    dedup_key: str
    event_id: str
    pixel_id: str
    event_name: str
    state: State
    detail: dict[str, Any] = field(default_factory=dict)


def minute_of(ms: int) -> int:
    return ms // 60_000


def bucket_for(latency_ms: float, bounds: Sequence[int] = LATENCY_BUCKETS_MS) -> str:
    for bound in bounds:
        if latency_ms <= bound:
            return str(bound)
    return "inf"


class Ledger:
    def __init__(self, client: Redis, ttl_s: int) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._record = client.register_script(_RECORD)

    def record(self, entries: Sequence[Entry], now_ms: int | None = None) -> None:
        """Append the entries to each event's life and bump the minute's counters."""
        if not entries:
            return
        at = now_ms if now_ms is not None else int(time.time() * 1000)
        args: list[Any] = [self._ttl_s]
        counts: Counter[str] = Counter()
        for e in entries:
            line = msgspec.json.encode({"at_ms": at, "state": e.state, "pixel_id": e.pixel_id,
                                        **e.detail})
            args += (e.dedup_key, e.event_id, e.state, line)
            counts[f"{e.state}:{e.pixel_id}:{e.event_name}"] += 1
        self._record(keys=[keys.PREFIX], args=args)
        self.count(counts, at)

    def count(self, counts: Counter[str], at_ms: int) -> None:
        self._add(keys.counters(minute_of(at_ms)), counts, {})

    def observe_batch(self, pixel_id: str, latency_ms: float,
                      delays: Iterable[tuple[str, float]], at_ms: int) -> None:
        """One delivered batch, into the minute's latency hash in one round trip.

        Meta's request latency per pixel (``<pixel>:<bucket_ms>``, ``:sum_ms``, ``:count``) and
        each event's received-to-delivered delay per pixel and event name
        (``delay:<pixel>:<event_name>:<bucket_ms>``, ``...:sum_ms``, ``...:count``); ``delays``
        holds (event_name, delay_ms) pairs.
        """
        counts = Counter({f"{pixel_id}:{bucket_for(latency_ms)}": 1, f"{pixel_id}:count": 1})
        sums = {f"{pixel_id}:sum_ms": latency_ms}
        for event_name, delay_ms in delays:
            prefix = f"delay:{pixel_id}:{event_name}"
            counts[f"{prefix}:{bucket_for(delay_ms, DELAY_BUCKETS_MS)}"] += 1
            counts[f"{prefix}:count"] += 1
            sums[f"{prefix}:sum_ms"] = sums.get(f"{prefix}:sum_ms", 0.0) + delay_ms
        self._add(keys.latency(minute_of(at_ms)), counts, sums)

    def _add(self, key: str, counts: Counter[str], sums: dict[str, float]) -> None:
        """Add to a per-minute hash in one round trip, and keep it for ``COUNTER_TTL_S``."""
        if not counts and not sums:
            return
        pipe = self._client.pipeline(transaction=False)
        for name, n in counts.items():
            pipe.hincrby(key, name, n)
        for name, total in sums.items():
            pipe.hincrbyfloat(key, name, round(total, 3))
        pipe.expire(key, COUNTER_TTL_S)
        pipe.execute()

    # -- reading (trace, audit, dashboard) ----------------------------------------------------
    def life(self, dedup_key: str) -> list[dict[str, Any]]:
        raw = self._client.lrange(keys.life(dedup_key), 0, -1)
        return [msgspec.json.decode(line) for line in raw]

    def state(self, dedup_key: str) -> str | None:
        value = self._client.get(keys.state(dedup_key))
        return value.decode() if isinstance(value, bytes) else None

    def states(self, dedup_keys: Sequence[str], chunk: int = 5_000) -> dict[str, str | None]:
        """The current state of each event (None: never recorded), a pipeline per ``chunk``."""
        found: dict[str, str | None] = {}
        for start in range(0, len(dedup_keys), chunk):
            part = dedup_keys[start:start + chunk]
            pipe = self._client.pipeline(transaction=False)
            for key in part:
                pipe.get(keys.state(key))
            for key, value in zip(part, pipe.execute(), strict=True):
                found[key] = value.decode() if isinstance(value, bytes) else None
        return found

    def accepted_between(self, start_ms: int, end_ms: int) -> dict[str, int]:
        """Dedup key -> acceptance time (ms) of every event the collector stored in
        [start_ms, end_ms], from the per-hour accepted sets the audit reads."""
        found: dict[str, int] = {}
        for hour in range(start_ms // 3_600_000, end_ms // 3_600_000 + 1):
            for member, score in self._client.zrangebyscore(keys.accepted(hour), start_ms,
                                                             end_ms, withscores=True):
                found[member.decode()] = int(score)
        return found

    def keys_for_event(self, event_id: str) -> list[str]:
        members: Iterable[bytes] = self._client.smembers(keys.event_index(event_id))
        return sorted(m.decode() for m in members)
