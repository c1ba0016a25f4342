"""The inbox protocol between collector and relay: two Lua scripts, each one atomic step.

``STORE`` (collector): append a group of events to the per-queue, per-pixel inbox lists, create
their ledger records as accepted for the audit (a repeat received the same day keeps the first
time), note each pixel and event name in the ledger's names (``keys.ledger_names``, once per
group), and save click contexts (``relay.clicks``). One EVALSHA per group commit, so the
collector's cost per event is a few list items, not a round trip.

``BATCH`` (relay): move up to ``max_batch`` events of one pixel out of the inbox into one Dramatiq
message on that queue, exactly as Dramatiq's own enqueue does (HSET ``<q>.msgs`` + RPUSH ``<q>``).
It stops while the queue already holds ``max_ready`` messages, so that under backlog events wait
in the inbox and batches leave full. A paused pixel (``relay.breaker``) is not cut, but for
one probe batch when its probe is due. Taking and enqueuing in one script means a crash can never
drop events between the two.

Both scripts receive every key they touch in ``KEYS[]`` (names from ``relay.keys``). STORE also
creates each event's ledger record (state "accepted", ``relay.ledger``), which the audit counts.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from relay import clicks, keys
from relay.breaker import BATCH_GATE
from relay.ledger import COUNTER_TTL_S

STORE = """
-- KEYS: every key touched, once each. ARGV: ledger ttl, n, then per event: inbox list and
-- ledger bucket (indexes into KEYS), record field, received ms, payload; then the number of
-- inbox sets and per set: key index, pixel; then the number of counters and per counter: key
-- index (the minute's), field, how many; then the number of ledger names and per name: key
-- index, ``pixel:event_name``, last received ms; then per click context: key index, expiry,
-- field, payload (field '': a key of the layout before the click buckets, expiry its ttl;
-- else a field of the click's hash, expiry a Unix time).
-- What is the same for many events of a group (a pixel's inbox set, a minute's counter) is
-- sent and written once per group, not once per event.
local ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local i = 3
local buckets = {}
for _ = 1, n do
  local bucket = tonumber(ARGV[i+1])
  redis.call('RPUSH', KEYS[tonumber(ARGV[i])], ARGV[i+4])
  -- the record of an accepted event; a repeat the same day keeps the first
  redis.call('HSETNX', KEYS[bucket], ARGV[i+2], 'a|' .. ARGV[i+3] .. '||')
  buckets[bucket] = true
  i = i + 5
end
for bucket in pairs(buckets) do
  redis.call('EXPIRE', KEYS[bucket], ttl)
end
local sets = tonumber(ARGV[i])
i = i + 1
for _ = 1, sets do
  redis.call('SADD', KEYS[tonumber(ARGV[i])], ARGV[i+1])
  i = i + 2
end
-- the dashboard's "received" per minute, pixel and event name
local counters, touched = tonumber(ARGV[i]), {}
i = i + 1
for _ = 1, counters do
  local stats = tonumber(ARGV[i])
  redis.call('HINCRBY', KEYS[stats], ARGV[i+1], tonumber(ARGV[i+2]))
  touched[stats] = true
  i = i + 3
end
for stats in pairs(touched) do
  redis.call('EXPIRE', KEYS[stats], COUNTER_TTL_S)
end
-- the ledger's names (pixel:event_name -> last received ms), for finding an event_id's copies
local names = tonumber(ARGV[i])
i = i + 1
for _ = 1, names do
  local key, name, at = KEYS[tonumber(ARGV[i])], ARGV[i+1], tonumber(ARGV[i+2])
  if at > tonumber(redis.call('HGET', key, name) or '0') then
    redis.call('HSET', key, name, at)
  end
  i = i + 3
end
local clicks = {}
while i <= #ARGV do
  local at = tonumber(ARGV[i])
  if ARGV[i+2] == '' then
    redis.call('SET', KEYS[at], ARGV[i+3], 'EX', ARGV[i+1])
  else
    redis.call('HSET', KEYS[at], ARGV[i+2], ARGV[i+3])
    clicks[at] = ARGV[i+1]
  end
  i = i + 4
end
for at, expiry in pairs(clicks) do
  redis.call('EXPIREAT', KEYS[at], expiry)
end
return n
""".replace("COUNTER_TTL_S", str(COUNTER_TTL_S))

BATCH = BATCH_GATE + """
-- KEYS: the queue's pixel set, the pixel's inbox, the Dramatiq queue and its .msgs hash, this
-- call's marker, the pixel's breaker. ARGV: queue, actor, pixel, max_batch, max_ready, now ms,
-- id prefix.
local pixels_key, list_key, queue_key = KEYS[1], KEYS[2], KEYS[3]
local msgs_key, call_key, breaker_key = KEYS[4], KEYS[5], KEYS[6]
local queue, actor, pixel = ARGV[1], ARGV[2], ARGV[3]
local max_batch, max_ready = tonumber(ARGV[4]), tonumber(ARGV[5])
local now_ms, id_prefix = tonumber(ARGV[6]), ARGV[7]
-- A call the client sends again because its reply was lost (Redis shut down after running it)
-- must not run twice: its batch ids would be made again, over different events.
if redis.call('EXISTS', call_key) == 1 then
  return 0
end
local made = 0
local gate = breaker_gate(breaker_key, now_ms)
while gate ~= 'none' and redis.call('LLEN', queue_key) < max_ready do
  local items = redis.call('LPOP', list_key, max_batch)
  if not items then
    break
  end
  made = made + 1
  local id = id_prefix .. '-' .. made
  if gate == 'one' then
    breaker_probe_cut(breaker_key, id, now_ms)  -- a paused pixel's one probe batch
    gate = 'none'
  end
  local message = cjson.encode({
    queue_name = queue, actor_name = actor, args = {pixel, items}, kwargs = {},
    options = {redis_message_id = id}, message_id = id, message_timestamp = now_ms,
  })
  redis.call('HSET', msgs_key, id, message)
  redis.call('RPUSH', queue_key, id)
end
if redis.call('LLEN', list_key) == 0 then
  redis.call('SREM', pixels_key, pixel)
end
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


def store_call(writes: Sequence[Write], ledger_ttl_s: int) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of one STORE call."""
    names: list[str] = []
    index: dict[str, int] = {}

    def at(name: str) -> int:
        if name not in index:
            names.append(name)
            index[name] = len(names)
        return index[name]

    events = [w for w in writes if isinstance(w, EventWrite)]
    args: list[Any] = [ledger_ttl_s, len(events)]
    inboxes: dict[tuple[str, str], int] = {}  # (queue, pixel) -> its inbox list's index
    received: Counter[tuple[int, str]] = Counter()  # (minute's counters, field) -> events
    for e in events:
        inbox_at = inboxes.get((e.queue, e.pixel_id))
        if inbox_at is None:
            inbox_at = inboxes[(e.queue, e.pixel_id)] = at(keys.inbox(e.queue, e.pixel_id))
        field = keys.ledger_field(e.dedup_key)
        args += (inbox_at, at(keys.ledger_bucket_of(e.dedup_key, e.received_ms)), field,
                 e.received_ms, e.payload)
        received[(at(keys.counters(e.received_ms // 60_000)),
                  f"received:{e.pixel_id}:{field.split(':', 1)[0]}")] += 1
    args.append(len(inboxes))
    for queue, pixel_id in inboxes:
        args += (at(keys.inbox_pixels(queue)), pixel_id)
    args.append(len(received))
    for (stats_at, counter), count in received.items():
        args += (stats_at, counter, count)
    seen: dict[str, int] = {}  # the ledger's names: pixel:event_name -> last received ms
    for e in events:
        name = keys.dedup_key_name(e.dedup_key)
        seen[name] = max(e.received_ms, seen.get(name, 0))
    args.append(len(seen))
    for name, at_ms in seen.items():
        args += (at(keys.ledger_names()), name, at_ms)
    for w in writes:
        if isinstance(w, ClickWrite):
            bucket = clicks.bucket_of(w.click_id)
            if bucket is None:  # an id of the layout before (a spool written before it)
                args += (at(keys.click(w.click_id)), w.ttl_s, "", w.payload)
            else:
                args += (at(bucket), clicks.expires_at_s(w.click_id, w.ttl_s), w.click_id,
                         w.payload)
    return names, args


class AsyncStore:
    """The collector's side: store a group of writes in one atomic EVALSHA."""

    def __init__(self, client: AsyncRedis, ledger_ttl_s: int) -> None:
        self._script = client.register_script(STORE)
        self._ledger_ttl_s = ledger_ttl_s

    async def __call__(self, writes: Sequence[Write]) -> None:
        names, args = store_call(writes, self._ledger_ttl_s)
        if names:
            await self._script(keys=names, args=args)


def store_sync(client: Redis, writes: Sequence[Write], ledger_ttl_s: int) -> None:
    """Synchronous twin of ``AsyncStore`` for tools and tests (``pixelrelay requeue``)."""
    names, args = store_call(writes, ledger_ttl_s)
    if names:
        client.register_script(STORE)(keys=names, args=args)


# Put a paused pixel's events back at the head of an inbox list, in their order.
# KEYS: inbox list, inbox pixel set; ARGV: pixel, items.
_PUT_BACK = """
for i = #ARGV, 2, -1 do
  redis.call('LPUSH', KEYS[1], ARGV[i])
end
redis.call('SADD', KEYS[2], ARGV[1])
return #ARGV - 1
"""


def put_back(client: Redis, queue: str, pixel_id: str, items: Sequence[bytes]) -> int:
    """Return stored events (``pack_envelope``) of a batch to the head of ``queue``'s inbox for
    the pixel, oldest first, in one atomic step. Release the batch's dedup claims on them first
    (``Dedup.release``): a repeat after a crash then only adds copies that dedup drops."""
    if not items:
        return 0
    script = client.register_script(_PUT_BACK)
    return int(script(keys=[keys.inbox(queue, pixel_id), keys.inbox_pixels(queue)],
                      args=[pixel_id, *items]))


class Batcher:
    """The relay's side: cut the inbox of one queue into Dramatiq messages."""

    def __init__(self, client: Redis, queue: str, actor_name: str, max_batch: int,
                 max_ready: int) -> None:
        self._client = client
        self._script = client.register_script(BATCH)
        self.queue = queue
        self.actor_name = actor_name
        self.max_batch = max_batch
        self.max_ready = max_ready

    def run_once(self, now_ms: int | None = None) -> int:
        """Make as many batch messages as the queue has room for; return how many.

        One script call per pixel with events waiting, each given its keys."""
        from relay import _dramatiq  # Dramatiq's layout; not imported by the collector

        made = 0
        pixels = sorted(p.decode() for p in self._client.smembers(keys.inbox_pixels(self.queue)))
        for pixel in pixels:
            call_id = secrets.token_hex(8)  # batch ids: <call id>-<n>
            made += int(self._script(
                keys=[keys.inbox_pixels(self.queue), keys.inbox(self.queue, pixel),
                      _dramatiq.queue(self.queue), _dramatiq.messages(self.queue),
                      keys.batch_call(call_id), keys.breaker(pixel)],
                args=[self.queue, self.actor_name, pixel, self.max_batch, self.max_ready,
                      int(time.time() * 1000) if now_ms is None else now_ms, call_id],
            ))
        return made


write_encoder = msgspec.msgpack.Encoder()
write_decoder = msgspec.msgpack.Decoder(Write)
