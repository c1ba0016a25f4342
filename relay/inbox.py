"""The inbox protocol between collector and relay: two Lua scripts, each one atomic step.

``STORE`` (collector): append a group of events to the per-queue, per-pixel inbox lists, record
them as accepted for the audit (the first time an event_id is seen stays its acceptance time),
and save click contexts. One EVALSHA per group commit, so the
collector's cost per event is a few list items, not a round trip.

``BATCH`` (relay): move up to ``max_batch`` events of one pixel out of the inbox into one Dramatiq
message on that queue, exactly as Dramatiq's own enqueue does (HSET ``<q>.msgs`` + RPUSH ``<q>``).
It stops while the queue already holds ``max_ready`` messages, so that under backlog events wait
in the inbox and batches leave full. Taking and enqueuing in one script means a crash can never
drop events between the two.

Keys are built inside the scripts from the prefixes in ``relay.keys`` (single-node Redis only).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from relay import keys
from relay.ledger import COUNTER_TTL_S

STORE = """
local prefix = KEYS[1]
local ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local i = 3
for _ = 1, n do
  local queue, pixel, dedup_key, ms, payload = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  i = i + 5
  redis.call('RPUSH', prefix .. ':inbox:' .. queue .. ':' .. pixel, payload)
  redis.call('SADD', prefix .. ':inbox:' .. queue, pixel)
  local hour_key = prefix .. ':accepted:' .. math.floor(tonumber(ms) / 3600000)
  redis.call('ZADD', hour_key, 'NX', ms, dedup_key)  -- a repeat keeps the first time
  redis.call('EXPIRE', hour_key, ttl)
  -- the dashboard's "received" per minute, pixel and event name (dedup key: pixel:name:id)
  local stats = prefix .. ':stats:' .. math.floor(tonumber(ms) / 60000)
  local event_name = string.match(dedup_key, '^[^:]*:([^:]*):')
  redis.call('HINCRBY', stats, 'received:' .. pixel .. ':' .. event_name, 1)
  redis.call('EXPIRE', stats, COUNTER_TTL_S)
end
while i <= #ARGV do
  redis.call('SET', prefix .. ':click:' .. ARGV[i], ARGV[i+2], 'EX', ARGV[i+1])
  i = i + 3
end
return n
""".replace("COUNTER_TTL_S", str(COUNTER_TTL_S))

BATCH = """
local prefix, namespace = KEYS[1], KEYS[2]
local queue, actor = ARGV[1], ARGV[2]
local max_batch, max_ready = tonumber(ARGV[3]), tonumber(ARGV[4])
local now_ms, id_prefix = tonumber(ARGV[5]), ARGV[6]
local queue_key = namespace .. ':' .. queue
local pixels_key = prefix .. ':inbox:' .. queue
-- A call the client sends again because its reply was lost (Redis shut down after running it)
-- must not run twice: its batch ids would be made again, over different events.
local call_key = prefix .. ':batchcall:' .. id_prefix
if redis.call('EXISTS', call_key) == 1 then
  return 0
end
local function cut()
  local made = 0
  for _, pixel in ipairs(redis.call('SMEMBERS', pixels_key)) do
    local list_key = pixels_key .. ':' .. pixel
    while true do
      if redis.call('LLEN', queue_key) >= max_ready then
        return made
      end
      local items = redis.call('LPOP', list_key, max_batch)
      if not items then
        redis.call('SREM', pixels_key, pixel)
        break
      end
      made = made + 1
      local id = id_prefix .. '-' .. made
      local message = cjson.encode({
        queue_name = queue, actor_name = actor, args = {pixel, items}, kwargs = {},
        options = {redis_message_id = id}, message_id = id, message_timestamp = now_ms,
      })
      redis.call('HSET', queue_key .. '.msgs', id, message)
      redis.call('RPUSH', queue_key, id)
      if redis.call('LLEN', list_key) == 0 then
        redis.call('SREM', pixels_key, pixel)
        break
      end
    end
  end
  return made
end
local made = cut()
if made > 0 then
  redis.call('SET', call_key, made, 'EX', 300)
end
return made
"""


class EventWrite(msgspec.Struct, tag="e", array_like=True):
    """One event to store in a queue's inbox."""

    queue: str
    pixel_id: str
    dedup_key: str
    received_ms: int
    payload: bytes


class ClickWrite(msgspec.Struct, tag="c", array_like=True):
    """One click context to keep for later enrichment."""

    click_id: str
    ttl_s: int
    payload: bytes


Write = EventWrite | ClickWrite


def store_arguments(writes: Sequence[Write], ledger_ttl_s: int) -> list[Any]:
    events = [w for w in writes if isinstance(w, EventWrite)]
    args: list[Any] = [ledger_ttl_s, len(events)]
    for e in events:
        args += (e.queue, e.pixel_id, e.dedup_key, e.received_ms, e.payload)
    for w in writes:
        if isinstance(w, ClickWrite):
            args += (w.click_id, w.ttl_s, w.payload)
    return args


class AsyncStore:
    """The collector's side: store a group of writes in one atomic EVALSHA."""

    def __init__(self, client: AsyncRedis, ledger_ttl_s: int) -> None:
        self._script = client.register_script(STORE)
        self._ledger_ttl_s = ledger_ttl_s

    async def __call__(self, writes: Sequence[Write]) -> None:
        await self._script(keys=[keys.PREFIX], args=store_arguments(writes, self._ledger_ttl_s))


def store_sync(client: Redis, writes: Sequence[Write], ledger_ttl_s: int) -> None:
    """Synchronous twin of ``AsyncStore`` for tools and tests (``pixelrelay requeue``)."""
    client.register_script(STORE)(keys=[keys.PREFIX], args=store_arguments(writes, ledger_ttl_s))


class Batcher:
    """The relay's side: cut the inbox of one queue into Dramatiq messages."""

    def __init__(self, client: Redis, queue: str, actor_name: str, max_batch: int,
                 max_ready: int) -> None:
        self._script = client.register_script(BATCH)
        self.queue = queue
        self.actor_name = actor_name
        self.max_batch = max_batch
        self.max_ready = max_ready

    def run_once(self) -> int:
        """Make as many batch messages as the queue has room for; return how many."""
        made = self._script(
            keys=[keys.PREFIX, keys.DRAMATIQ_NAMESPACE],
            args=[self.queue, self.actor_name, self.max_batch, self.max_ready,
                  int(time.time() * 1000), uuid.uuid4().hex],
        )
        return int(made)


write_encoder = msgspec.msgpack.Encoder()
write_decoder = msgspec.msgpack.Decoder(Write)
