"""Dead letters: events that will not be delivered without an operator, with the reason why.

Kept per event (not per batch) so one bad event does not hide its batch-mates, for
``ledger_ttl_days``. ``requeue`` puts an event back into its queue's inbox in one atomic step;
``discard`` drops it (its state stays ``dead``); either adds the operator's step (who, when,
``relay.ledger.Actor``) to the event's life in that same step. Both are Lua scripts, so an
event is never both requeued and dead, and two operators acting on the same letter move it
once.

Besides the time-ordered set of all letters, each letter is indexed by pixel, event name, kind
and Meta code (``keys.dead_index``), and the count per ``kind:code`` is kept
(``keys.dead_reasons``), so the dashboard filters and pages 100,000 letters by reading only
the index it needs. The record names its own index entries, so removal needs no search.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from redis import Redis

from relay import keys
from relay.dedup import claim_days
from relay.events import Envelope, decode_envelope, encode
from relay.ledger import RECORD_LUA, Actor

_List = list  # the class below has a method named list
FACETS = ("pixel", "event", "kind", "code")
_SEPARATOR = "\n"
TRIM_PER_CALL = 500  # expired letters removed per add (bounded work per batch)
EXACT_COUNT_MAX = 10_000  # letters in the smallest index a filter's exact count may walk
DEFAULT_DEDUP_WINDOW_S = 48 * 3600

_REMOVE = """
local function remove(prefix, dedup_key)
  local record = prefix .. ':dead:' .. dedup_key
  local found = redis.call('HMGET', record, 'index', 'reason_key', 'envelope')
  if found[1] then
    for index in string.gmatch(found[1], '[^\\n]+') do
      redis.call('ZREM', prefix .. ':dead:ix:' .. index, dedup_key)
    end
  end
  if found[2] then
    if redis.call('HINCRBY', prefix .. ':dead:reasons', found[2], -1) <= 0 then
      redis.call('HDEL', prefix .. ':dead:reasons', found[2])
    end
  end
  redis.call('ZREM', prefix .. ':dead', dedup_key)
  redis.call('DEL', record)
  return found[3]
end
"""

_ADD = _REMOVE + """
local prefix, now, ttl, cutoff = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
for _, old in ipairs(redis.call('ZRANGEBYSCORE', prefix .. ':dead', '-inf', cutoff,
                                'LIMIT', 0, tonumber(ARGV[4]))) do
  remove(prefix, old)
end
local i = 5
while i <= #ARGV do
  local dedup_key, envelope, reason, index, reason_key =
    ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  i = i + 5
  remove(prefix, dedup_key)  -- dead again: replaces the old letter
  local record = prefix .. ':dead:' .. dedup_key
  redis.call('HSET', record, 'envelope', envelope, 'reason', reason, 'dead_at_ms', now,
             'index', index, 'reason_key', reason_key)
  redis.call('EXPIRE', record, ttl)
  redis.call('ZADD', prefix .. ':dead', now, dedup_key)
  for one in string.gmatch(index, '[^\\n]+') do
    redis.call('ZADD', prefix .. ':dead:ix:' .. one, now, dedup_key)
    redis.call('EXPIRE', prefix .. ':dead:ix:' .. one, ttl)
  end
  redis.call('HINCRBY', prefix .. ':dead:reasons', reason_key, 1)
end
return 1
"""

_REQUEUE = _REMOVE + RECORD_LUA + """
-- KEYS: the prefix (for the letter's own index keys), the inbox, the inbox's pixel set, the
-- operator step's log, the event's ledger bucket, the old layout's claim and state keys, then
-- the claim buckets to clear. ARGV: dedup key, pixel, then the operator step
-- (``Actor.script_args``: batch, step, ttl, record field, state letter).
local prefix, dedup_key, pixel = KEYS[1], ARGV[1], ARGV[2]
local payload = remove(prefix, dedup_key)
if not payload then
  return 0
end
redis.call('RPUSH', KEYS[2], payload)
redis.call('SADD', KEYS[3], pixel)
add_operator_step(KEYS[4], ARGV[3], ARGV[4], tonumber(ARGV[5]), KEYS[5], ARGV[6], ARGV[7])
redis.call('DEL', KEYS[6])
if redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('SET', KEYS[7], 'requeued', 'KEEPTTL')
end
for k = 8, #KEYS do
  redis.call('HDEL', KEYS[k], ARGV[6])
end
return 1
"""

_DISCARD = _REMOVE + RECORD_LUA + """
-- KEYS: the prefix, the operator step's log, the event's ledger bucket. ARGV: dedup key, then
-- the operator step (as for requeue).
if remove(KEYS[1], ARGV[1]) then
  add_operator_step(KEYS[2], ARGV[2], ARGV[3], tonumber(ARGV[4]), KEYS[3], ARGV[5], ARGV[6])
  return 1
end
return 0
"""


_WALK = """
-- KEYS[1]: the sorted set walked (newest first from rank ARGV[1]); KEYS[2..]: the other
-- facets' indexes a letter must be in. ARGV: start rank, lowest score ('-inf' or a number),
-- limit, most entries to look at, chunk size. Returns {found, last member, last score,
-- 1 when the end (or the lowest score) was reached, entries looked at}.
local start, limit, most, step = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
local lo = ARGV[2] ~= '-inf' and tonumber(ARGV[2]) or nil
local found, last, last_score, seen = {}, false, false, 0
while seen < most do
  local rows = redis.call('ZREVRANGE', KEYS[1], start, start + step - 1, 'WITHSCORES')
  if #rows == 0 then
    return {found, last, last_score, 1, seen}
  end
  for i = 1, #rows, 2 do
    local member, score = rows[i], rows[i + 1]
    if lo and tonumber(score) < lo then
      return {found, last, last_score, 1, seen}
    end
    seen = seen + 1
    last, last_score = member, score
    local ok = true
    for k = 2, #KEYS do
      if not redis.call('ZSCORE', KEYS[k], member) then
        ok = false
        break
      end
    end
    if ok then
      found[#found + 1] = member
      if #found == limit then
        return {found, last, last_score, 0, seen}
      end
    end
    if seen >= most then
      break
    end
  end
  if #rows < 2 * step then
    return {found, last, last_score, 1, seen}
  end
  start = start + step
end
return {found, last, last_score, 0, seen}
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    dedup_key: str
    envelope: Envelope
    reason: dict[str, Any]
    dead_at_ms: int

    @property
    def kind(self) -> str:
        return str(self.reason.get("kind") or "unknown")

    @property
    def code(self) -> str:
        return _code(self.reason)


def _code(reason: dict[str, Any]) -> str:
    code = reason.get("code")
    return "none" if code is None else str(code)


def reason_key(reason: dict[str, Any]) -> str:
    return f"{reason.get('kind') or 'unknown'}:{_code(reason)}"


@dataclass(frozen=True, slots=True)
class DeadFilter:
    """Which letters to show or act on; empty fields match everything."""

    pixel: str = ""
    event: str = ""
    kind: str = ""
    code: str = ""
    newer_than_ms: int | None = None  # dead at or after this epoch ms
    older_than_ms: int | None = None  # dead at or before this epoch ms

    def facets(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in FACETS if getattr(self, f)}


@dataclass(frozen=True, slots=True)
class Page:
    letters: list[DeadLetter]
    next_cursor: str | None  # pass back to get the next page; None at the end
    examined: int  # index entries looked at (bounded by ``scan_max``)


class DeadLetters:
    def __init__(self, client: Redis, ttl_s: int,
                 dedup_window_s: int = DEFAULT_DEDUP_WINDOW_S) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._dedup_window_s = dedup_window_s
        self._add = client.register_script(_ADD)
        self._requeue = client.register_script(_REQUEUE)
        self._discard = client.register_script(_DISCARD)
        self._walk = client.register_script(_WALK)

    def add(self, envelopes: Sequence[Envelope], reason: dict[str, Any],
            now_ms: int | None = None) -> None:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        reason_json = msgspec.json.encode(reason)
        rkey = reason_key(reason)
        args: _List[Any] = [now, self._ttl_s, now - self._ttl_s * 1000, TRIM_PER_CALL]
        for env in envelopes:
            index = _SEPARATOR.join((f"pixel:{env.pixel_id}", f"event:{env.event.event_name}",
                                     f"kind:{reason.get('kind') or 'unknown'}",
                                     f"code:{_code(reason)}"))
            args += (env.dedup_key, encode(env), reason_json, index, rkey)
        self._add(keys=[keys.PREFIX], args=args)

    def count(self) -> int:
        return int(self._client.zcard(keys.dead_letters()))

    def reasons(self) -> dict[str, int]:
        """Dead letters now, per ``kind:code``."""
        raw = self._client.hgetall(keys.dead_reasons())
        return {k.decode(): int(v) for k, v in raw.items() if int(v) > 0}

    def list(self, offset: int = 0, limit: int = 50) -> _List[DeadLetter]:
        names = self._client.zrevrange(keys.dead_letters(), offset, offset + limit - 1)
        return self._records([n.decode() for n in names])

    def _records(self, dedup_keys: Sequence[str]) -> _List[DeadLetter]:
        pipe = self._client.pipeline(transaction=False)
        for dk in dedup_keys:
            pipe.hgetall(keys.dead_letter(dk))
        result = []
        for dk, record in zip(dedup_keys, pipe.execute(), strict=True):
            if record:
                result.append(_letter(dk, record))
        return result

    def get(self, dedup_key: str) -> DeadLetter | None:
        record = self._client.hgetall(keys.dead_letter(dedup_key))
        return _letter(dedup_key, record) if record else None

    def requeue(self, dedup_key: str, queue: str, by: Actor) -> bool:
        """Move one dead event back into its queue's inbox; False if it is not dead.

        In the same step its dedup claim is deleted (so the next batch may send it), and its
        ledger record set to "requeued" with ``by`` (who, when) as a step of its life."""
        letter = self.get(dedup_key)
        if letter is None:
            return False
        pixel_id, _, event_id = keys.split_dedup_key(dedup_key)
        today, slot = keys.day_of(int(time.time() * 1000)), keys.slot_of(event_id)
        claims = [keys.claim_bucket(pixel_id, today - back, slot)
                  for back in range(claim_days(self._dedup_window_s))]
        done = self._requeue(
            keys=[keys.PREFIX, keys.inbox(queue, pixel_id), keys.inbox_pixels(queue),
                  *by.script_keys(dedup_key, letter.envelope.received_ms),
                  keys.dedup(dedup_key), keys.state(dedup_key), *claims],
            args=[dedup_key, pixel_id, *by.script_args("requeued", dedup_key, self._ttl_s)])
        return bool(done)

    def discard(self, dedup_key: str, by: Actor) -> bool:
        """Drop one dead letter for good; False if it is not dead. Its ledger record stays
        dead and gains ``by`` as a step; its dedup claim stays, so a copy sent again later is
        still dropped as a duplicate."""
        letter = self.get(dedup_key)
        if letter is None:
            return False
        return bool(self._discard(
            keys=[keys.PREFIX, *by.script_keys(dedup_key, letter.envelope.received_ms)],
            args=[dedup_key, *by.script_args("discarded", dedup_key, self._ttl_s)]))

    # -- filtering and paging -----------------------------------------------------------------
    def matching_count(self, where: DeadFilter) -> tuple[int, bool]:
        """(count, exact). Exact for no facet or one, for kind and code together (the count
        per reason), and for several facets whose smallest index holds at most
        ``EXACT_COUNT_MAX`` letters (ZINTERCARD, whose work is that index's size: Redis does
        nothing else meanwhile). Otherwise, or with an age, the smallest index's count is an
        upper bound."""
        source, size = self._source(where)
        lo, hi = _score_range(where)
        timed = (lo, hi) != ("-inf", "+inf")
        facets = where.facets()
        if len(facets) > 1 and not timed:
            if set(facets) == {"kind", "code"}:
                raw = self._client.hget(keys.dead_reasons(), f"{where.kind}:{where.code}")
                return max(0, int(raw or 0)), True
            if size <= EXACT_COUNT_MAX:
                indexes = [keys.dead_index(f, v) for f, v in facets.items()]
                return int(self._client.zintercard(len(indexes), indexes)), True
        n = int(self._client.zcount(source, lo, hi)) if timed else size
        return n, len(facets) <= 1

    def page(self, where: DeadFilter, cursor: str | None = None, limit: int = 50,
             scan_max: int = 5_000) -> Page:
        """Newest first, ``limit`` letters matching ``where`` after ``cursor``.

        Walks the smallest index the filter names, looking at most ``scan_max`` entries, in one
        script call that checks the other facets' indexes by ZSCORE (``_WALK``), so a page
        costs the same at 100 or 100,000 letters. A page may be short while letters remain:
        ``next_cursor`` then continues from where this one stopped.
        """
        by_size = self._indexes_by_size(where)
        source = by_size[0][1] if by_size else keys.dead_letters()
        others = [key for _, key in by_size[1:]]
        lo, hi = _score_range(where)
        start = 0 if hi == "+inf" else int(self._client.zcount(source, f"({hi}", "+inf"))
        if cursor:
            score_text, _, member = cursor.partition(":")
            rank = self._client.zrevrank(source, member)
            if rank is None:  # the cursor's letter was requeued meanwhile: resume by time
                rank = int(self._client.zcount(source, score_text, "+inf")) - 1
            start = max(start, rank + 1)
        raw = self._walk(keys=[source, *others],
                         args=[start, lo, limit, scan_max, min(500, scan_max)])
        found = [m.decode() for m in raw[0]]
        last_member, last_score, exhausted, examined = raw[1], raw[2], raw[3], int(raw[4])
        if not last_member or (exhausted and len(found) < limit):
            next_cursor = None
        else:
            next_cursor = f"{int(float(last_score))}:{last_member.decode()}"
        return Page(self._records(found), next_cursor, examined)

    def matching_keys(self, where: DeadFilter, chunk: int = 500) -> Iterator[_List[str]]:
        """Every letter matching ``where``, newest first, a chunk at a time (bulk actions)."""
        cursor: str | None = None
        while True:
            page = self.page(where, cursor, limit=chunk, scan_max=chunk * 10)
            keys_found = [d.dedup_key for d in page.letters]
            if keys_found:
                yield keys_found
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def _source(self, where: DeadFilter) -> tuple[str, int]:
        """The sorted set to walk: the smallest index the filter names, else all letters."""
        by_size = self._indexes_by_size(where)
        if not by_size:
            return keys.dead_letters(), int(self._client.zcard(keys.dead_letters()))
        return by_size[0][1], by_size[0][0]

    def _indexes_by_size(self, where: DeadFilter) -> _List[tuple[int, str]]:
        """(size, key) of each index the filter names, smallest first: the walk goes down the
        first and checks the others in this order, so most misses cost one ZSCORE."""
        candidates = [keys.dead_index(f, v) for f, v in where.facets().items()]
        if not candidates:
            return []
        pipe = self._client.pipeline(transaction=False)
        for key in candidates:
            pipe.zcard(key)
        return sorted((int(n), key) for n, key in zip(pipe.execute(), candidates, strict=True))


def _score_range(where: DeadFilter) -> tuple[str, str]:
    lo = "-inf" if where.newer_than_ms is None else str(where.newer_than_ms)
    hi = "+inf" if where.older_than_ms is None else str(where.older_than_ms)
    return lo, hi


def _letter(dedup_key: str, record: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(dedup_key, decode_envelope(record[b"envelope"]),
                      msgspec.json.decode(record[b"reason"]), int(record[b"dead_at_ms"]))
