"""The event ledger: what happened to each event, per-minute counters and latencies.

Layout (``relay.keys``): each accepted event has one record, a field ``event_name:event_id`` of
a hash grouped by pixel, receive day and slot (``ledger_bucket``), holding
``<state>|<received_ms>|<source>|<steps>``: a state letter, when the collector received it, a
source letter, and references to the steps of batch logs that concern it. A batch log
(``batch_log``, a list per batch) holds one JSON step per outcome (attempt, delivered with its
fbtrace_id and Meta's latency, deferred, dead with the reason, duplicate), written once for all
the events it concerns. So an event delivered in its first batch costs one short field
(``d|1764620000123|r|Ab12Cd34Ef56Gh78-3#0``, in a compact listpack hash) instead of a list, a
state key, an index entry and an accepted entry of its own. Every read goes through ``Ledger``
(``pixelrelay trace``/``audit``, the dashboard): callers never read these keys.

Steps are ``<batch>#<index>`` joined by ``,``; consecutive steps of the same batch are written
``#<index>`` only (``Ab..-3#0#1#2``). A duplicate only sets the state of a record that has none
yet (accepted), so a delivered event stays delivered; ``attempt`` never sets it.
Records, batch logs and hashes expire after ``ledger_ttl_days``; per-minute counters after 8 days.

Records of the layout before this one (``life:``, ``state:``, ``eventid:``, ``accepted:`` keys)
are still read until they expire, so an upgrade loses no history (docs/deploy.md, "Upgrading").
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from redis import Redis

from relay import keys

State = Literal["accepted", "queued", "attempt", "delivered", "dead", "duplicate", "deferred",
                "requeued"]
FINAL_STATES = frozenset({"delivered", "dead", "duplicate"})
LATENCY_BUCKETS_MS = (25, 50, 100, 200, 400, 800, 1600, 3200, 6400)
DELAY_BUCKETS_MS = (250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000)
COUNTER_TTL_S = 8 * 86_400
STATE_CODES: dict[str, str] = {"accepted": "a", "queued": "q", "attempt": "t",
                               "delivered": "d", "dead": "x", "duplicate": "u",
                               "deferred": "f", "requeued": "r"}
STATE_NAMES = {code: name for name, code in STATE_CODES.items()}
SOURCE_CODES = {"redirect": "r", "beacon": "b", "server": "s"}
SOURCE_NAMES = {code: name for name, code in SOURCE_CODES.items()}
OPERATOR_BATCH = "op-"  # batch logs of operators' actions (``Actor``)
# Detail that differs per event of a step: kept in the record, or derived when read.
_PER_EVENT = frozenset({"batch", "received_ms", "source", "delay_ms"})
# Which state a merged view of several records (copies received on different days) shows.
_STATE_RANK = {"delivered": 0, "dead": 1, "requeued": 2, "deferred": 2, "queued": 2,
               "attempt": 2, "duplicate": 3, "accepted": 4}

# Lua helpers every script that touches an event record shares.
RECORD_LUA = """
local function parse_record(raw)
  local s, recv, src, steps = string.match(raw, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
  return {s, recv, src, steps}
end
local function join_record(r)
  return r[1] .. '|' .. r[2] .. '|' .. r[3] .. '|' .. r[4]
end
-- point a record to step ``index`` of ``batch``'s log (runs of one batch written ``#i#j``)
local function add_step(r, batch, index)
  local last = string.match(r[4], '([^,]*)$')
  if r[4] ~= '' and string.match(last, '^([^#]*)') == batch then
    r[4] = r[4] .. '#' .. index
  elseif r[4] == '' then
    r[4] = batch .. '#' .. index
  else
    r[4] = r[4] .. ',' .. batch .. '#' .. index
  end
end
-- an operator's step (requeue, discard): its log holds the one step, written once for every
-- event the action moves; ``state`` (a letter, or '') becomes the record's state
local function add_operator_step(log, batch, step, ttl, bucket, name, state)
  if redis.call('LLEN', log) == 0 then
    redis.call('RPUSH', log, step)
    redis.call('EXPIRE', log, ttl)
  end
  local raw = redis.call('HGET', bucket, name)
  if not raw then
    return
  end
  local r = parse_record(raw)
  if state ~= '' then
    r[1] = state
  end
  add_step(r, batch, 0)
  redis.call('HSET', bucket, name, join_record(r))
end
"""

_RECORD = RECORD_LUA + """
-- KEYS[1]: the batch log; KEYS[2..]: ledger buckets.
-- ARGV: ttl, batch, then per step: step JSON, state letter, n, then n x (bucket index, field,
-- received ms, source letter).
local ttl, batch = tonumber(ARGV[1]), ARGV[2]
local i = 3
while i <= #ARGV do
  local step, state, n = ARGV[i], ARGV[i+1], tonumber(ARGV[i+2])
  i = i + 3
  local index = redis.call('RPUSH', KEYS[1], step) - 1
  for _ = 1, n do
    local bucket, name = KEYS[tonumber(ARGV[i])], ARGV[i+1]
    local raw = redis.call('HGET', bucket, name)
    local r
    if raw then r = parse_record(raw) else r = {'a', ARGV[i+2], '', ''} end
    if r[3] == '' then r[3] = ARGV[i+3] end
    i = i + 4
    if state == 'u' then
      -- a later copy must not hide what happened to the first: it only names a state never set
      if r[1] == 'a' then r[1] = state end
    elseif state ~= 't' then
      r[1] = state
    end
    add_step(r, batch, index)
    redis.call('HSET', bucket, name, join_record(r))
  end
end
for k = 1, #KEYS do
  redis.call('EXPIRE', KEYS[k], ttl)
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
    received_ms: int = 0  # when the collector received it: where its record is (0: now)
    source: str = ""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who requeues or discards dead letters, when, from where: the step it adds to the life
    of each event it moves. Written once per action and pixel (``add_operator_step`` in
    ``RECORD_LUA``, run by ``relay.deadletters``' scripts in the same atomic step as the move),
    so a bulk action over thousands of letters costs one step and a reference each."""

    who: str
    via: str  # "dashboard" or "cli"
    at_ms: int
    action_id: str  # one per action: a bulk job's id, or random

    @classmethod
    def now(cls, who: str, via: str, action_id: str | None = None) -> Actor:
        return cls(who, via, int(time.time() * 1000), action_id or secrets.token_hex(6))

    @property
    def batch(self) -> str:
        return f"{OPERATOR_BATCH}{self.action_id}"

    def script_keys(self, dedup_key: str, received_ms: int) -> list[str]:
        """The step's log and the event's record bucket (for ``add_operator_step``)."""
        pixel_id = keys.split_dedup_key(dedup_key)[0]
        return [keys.batch_log(pixel_id, self.batch),
                keys.ledger_bucket_of(dedup_key, received_ms)]

    def script_args(self, action: Literal["requeued", "discarded"], dedup_key: str,
                    ttl_s: int) -> list[Any]:
        """batch, step JSON, ttl, record field, the record's new state letter ('' keeps it)."""
        step = msgspec.json.encode({"at_ms": self.at_ms, "state": action, "by": self.who,
                                    "via": self.via})
        state = STATE_CODES["requeued"] if action == "requeued" else ""
        return [self.batch, step, ttl_s, keys.ledger_field(dedup_key), state]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """What the ledger knows of one (pixel, event_name, event_id)."""

    dedup_key: str
    state: str | None  # None: nothing recorded
    received_ms: int | None  # when the collector accepted it (the first copy)
    life: list[dict[str, Any]]  # every step, oldest first


def minute_of(ms: int) -> int:
    return ms // 60_000


def bucket_for(latency_ms: float, bounds: Sequence[int] = LATENCY_BUCKETS_MS) -> str:
    for bound in bounds:
        if latency_ms <= bound:
            return str(bound)
    return "inf"


def parse_record(raw: bytes | str) -> tuple[str, int, str, str]:
    """(state name, received ms, source name, steps) of a stored record."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    state, received, source, steps = text.split("|", 3)
    return (STATE_NAMES.get(state, state), int(received or 0), SOURCE_NAMES.get(source, source),
            steps)


def _step_refs(steps: str) -> list[tuple[str, int]]:
    refs = []
    for run in filter(None, steps.split(",")):
        batch, *indexes = run.split("#")
        refs += [(batch, int(i)) for i in indexes]
    return refs


def _pixel_of(bucket: str) -> str:
    return bucket.split("{", 1)[1].split("}", 1)[0]


def _day_of_bucket(bucket: str) -> int:
    return int(bucket.rsplit(":", 2)[1])


def _glob_escape(text: str) -> str:
    """Escape Redis glob characters so a pattern matches ``text`` only."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


class Ledger:
    def __init__(self, client: Redis, ttl_s: int) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._record = client.register_script(_RECORD)

    # -- writing --------------------------------------------------------------------------------
    def record(self, entries: Sequence[Entry], now_ms: int | None = None) -> None:
        """Add the entries' steps to their batch logs, point the records to them, bump the
        minute's counters: one script call per batch."""
        if not entries:
            return
        at = now_ms if now_ms is not None else int(time.time() * 1000)
        counts: Counter[str] = Counter()
        by_batch: dict[tuple[str, str], list[Entry]] = {}
        for e in entries:
            counts[f"{e.state}:{e.pixel_id}:{e.event_name}"] += 1
            by_batch.setdefault((e.pixel_id, str(e.detail.get("batch", "-"))), []).append(e)
        for (pixel_id, batch), group in by_batch.items():
            self._record_batch(pixel_id, batch, group, at)
        self.count(counts, at)

    def _record_batch(self, pixel_id: str, batch: str, entries: Sequence[Entry], at: int) -> None:
        steps: dict[bytes, tuple[str, list[Entry]]] = {}
        for e in entries:
            detail = {k: v for k, v in e.detail.items() if k not in _PER_EVENT}
            step = msgspec.json.encode({"at_ms": at, "state": e.state, **detail})
            steps.setdefault(step, (e.state, []))[1].append(e)
        script_keys = [keys.batch_log(pixel_id, batch)]
        index: dict[str, int] = {}
        args: list[Any] = [self._ttl_s, batch]
        for step, (state, group) in steps.items():
            args += (step, STATE_CODES[state], len(group))
            for e in group:
                received = e.received_ms or at
                bucket = keys.ledger_bucket_of(e.dedup_key, received)
                if bucket not in index:
                    script_keys.append(bucket)
                    index[bucket] = len(script_keys)
                args += (index[bucket], keys.ledger_field(e.dedup_key), received,
                         SOURCE_CODES.get(e.source, ""))
        self._record(keys=script_keys, args=args)

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
    def _days(self) -> range:
        today = keys.day_of(int(time.time() * 1000))
        return range(today - self._ttl_s // 86_400 - 1, today + 2)

    def event(self, dedup_key: str) -> EventRecord:
        """Everything recorded about one event: its records of every receive day (copies) and,
        from before the ledger buckets, its life list and state key."""
        pixel_id, _, event_id = keys.split_dedup_key(dedup_key)
        name, slot = keys.ledger_field(dedup_key), keys.slot_of(event_id)
        days = list(self._days())
        pipe = self._client.pipeline(transaction=False)
        for day in days:
            pipe.hget(keys.ledger_bucket(pixel_id, day, slot), name)
        pipe.lrange(keys.life(dedup_key), 0, -1)
        pipe.get(keys.state(dedup_key))
        *raws, old_life, old_state = pipe.execute()
        records = [parse_record(raw) for raw in raws if raw is not None]
        life = [msgspec.json.decode(line) for line in old_life]
        refs = [(ref, received, source) for _, received, source, steps in records
                for ref in _step_refs(steps)]
        pipe = self._client.pipeline(transaction=False)
        for (batch, i), _, _ in refs:
            pipe.lindex(keys.batch_log(pixel_id, batch), i)
        for ((batch, _), received, source), raw in zip(refs, pipe.execute(), strict=True):
            if raw is None:
                continue  # its batch log expired
            step = msgspec.json.decode(raw)
            entry = {"at_ms": step.pop("at_ms"), "state": step.pop("state"),
                     "pixel_id": pixel_id}
            if batch != "-" and not batch.startswith(OPERATOR_BATCH):
                entry["batch"] = batch
            entry.update(step)
            if entry["state"] == "delivered" and source:
                entry.update(received_ms=received, source=source or None,
                             delay_ms=entry["at_ms"] - received)
            life.append(entry)
        life.sort(key=lambda e: e["at_ms"])
        states = [state for state, *_ in records]
        if old_state is not None:
            states.append(old_state.decode())
        state = min(states, key=lambda s: _STATE_RANK.get(s, 2)) if states else None
        received_ms = min((received for _, received, _, _ in records), default=None)
        if received_ms is None and (old_life or old_state is not None):
            received_ms = self._old_received(dedup_key)
        return EventRecord(dedup_key, state, received_ms, life)

    def _old_received(self, dedup_key: str) -> int | None:
        """When the collector accepted an event of the layout before the buckets (one ZSCORE
        per kept hour, in one round trip; only such events pay it)."""
        now_hour = int(time.time()) // 3600
        hours = range(now_hour - self._ttl_s // 3600 - 1, now_hour + 1)
        pipe = self._client.pipeline(transaction=False)
        for hour in hours:
            pipe.zscore(keys.accepted(hour), dedup_key)
        return next((int(score) for score in pipe.execute() if score is not None), None)

    def counts(self, minutes: int, now_ms: int | None = None) -> Counter[str]:
        """The per-minute counters (``<state>:<pixel>:<event_name>``) of the last ``minutes``
        minutes, this one included, added up."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        last = minute_of(now)
        pipe = self._client.pipeline(transaction=False)
        for minute in range(last - minutes + 1, last + 1):
            pipe.hgetall(keys.counters(minute))
        total: Counter[str] = Counter()
        for fields in pipe.execute():
            for name, value in fields.items():
                total[name.decode()] += int(value)
        return total

    def life(self, dedup_key: str) -> list[dict[str, Any]]:
        return self.event(dedup_key).life

    def state(self, dedup_key: str) -> str | None:
        """The event's state; None when nothing is recorded, "accepted" while no relay worker
        has touched it yet."""
        return self.event(dedup_key).state

    def states(self, dedup_keys: Sequence[str]) -> dict[str, str | None]:
        """The current state of each event (None: never recorded)."""
        return {key: self.state(key) for key in dedup_keys}

    def accepted_between(self, start_ms: int, end_ms: int) -> dict[str, int]:
        """Dedup key -> receive time (ms) of every event the collector stored in
        [start_ms, end_ms] (the first copy's, when one was received twice)."""
        found: dict[str, int] = {}
        for key, received, _ in self.accepted(start_ms):
            if received <= end_ms:
                found[key] = min(received, found.get(key, received))
        return found

    def accepted_states(self, start_ms: int, end_ms: int) -> dict[str, str]:
        """Dedup key -> state of every event received in [start_ms, end_ms], in one pass over
        the buckets (the most advanced state of its copies)."""
        found: dict[str, str] = {}
        for key, received, state in self.accepted(start_ms):
            if received <= end_ms and (key not in found or _STATE_RANK.get(state, 2)
                                        < _STATE_RANK.get(found[key], 2)):
                found[key] = state
        return found

    def copies(self, event_id: str, now_ms: int | None = None) -> list[str]:
        """Dedup keys of every pixel's and event name's copy of ``event_id``, read without
        searching: the pixels and event names the collector stored within the ledger's TTL
        (``keys.ledger_names``) give the fields to look at in ``event_id``'s slot of each kept
        day, one round trip for them all (plus the layout before the buckets' index)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        oldest = now - self._ttl_s * 1000 - keys.DAY_MS
        names = [n.decode() for n, at in self._client.hgetall(keys.ledger_names()).items()
                 if int(at) >= oldest]
        by_pixel: dict[str, list[str]] = {}
        for name in sorted(names):
            pixel_id, event_name = name.split(":", 1)
            by_pixel.setdefault(pixel_id, []).append(f"{event_name}:{event_id}")
        slot = keys.slot_of(event_id)
        asked: list[tuple[str, list[str]]] = []
        pipe = self._client.pipeline(transaction=False)
        for pixel_id, fields in by_pixel.items():
            for day in self._days():
                pipe.hmget(keys.ledger_bucket(pixel_id, day, slot), fields)
                asked.append((pixel_id, fields))
        pipe.smembers(keys.event_index(event_id))
        *answers, old_layout = pipe.execute()
        found = {m.decode() for m in old_layout}
        for (pixel_id, fields), values in zip(asked, answers, strict=True):
            found.update(f"{pixel_id}:{f}" for f, v in zip(fields, values, strict=True)
                         if v is not None)
        return sorted(found)

    def keys_for_event(self, event_id: str) -> list[str]:
        """``copies``, and also any copy under a pixel or event name the collector has not
        stored since ``keys.ledger_names`` came (records from before it): this one SCANs the
        buckets of ``event_id``'s slot, for ``pixelrelay trace`` only, never a page."""
        found: set[str] = set(self.copies(event_id))
        match = f"*:{_glob_escape(event_id)}"
        for raw in self._client.scan_iter(keys.ledger_bucket_pattern(keys.slot_of(event_id)),
                                          count=10_000):
            bucket = raw.decode()
            for name, _ in self._client.hscan_iter(bucket, match=match):
                found.add(f"{_pixel_of(bucket)}:{name.decode()}")
        found.update(m.decode() for m in self._client.smembers(keys.event_index(event_id)))
        return sorted(found)

    def accepted(self, since_ms: int) -> Iterator[tuple[str, int, str]]:
        """(dedup key, received ms, state) of every record received since ``since_ms``, one per
        copy received on another day; then the old layout's accepted events (their state
        "accepted" when none is recorded)."""
        first_day = keys.day_of(since_ms)
        seen: set[str] = set()
        for raw in self._client.scan_iter(keys.ledger_bucket_pattern(), count=10_000):
            bucket = raw.decode()
            if _day_of_bucket(bucket) < first_day:
                continue
            pixel_id = _pixel_of(bucket)
            for name, value in self._client.hscan_iter(bucket, count=1_000):
                state, received, _, _ = parse_record(value)
                dedup_key = f"{pixel_id}:{name.decode()}"
                seen.add(dedup_key)
                if received >= since_ms:
                    yield dedup_key, received, state
        for dedup_key, received, state in self._old_accepted(since_ms):
            if dedup_key not in seen:  # accepted before an upgrade, recorded after it
                yield dedup_key, received, state

    def _old_accepted(self, since_ms: int) -> Iterator[tuple[str, int, str]]:
        now_hour = int(time.time()) // 3600
        for hour in range(since_ms // 3_600_000, now_hour + 1):
            members = self._client.zrange(keys.accepted(hour), 0, -1, withscores=True)
            if not members:
                continue
            pipe = self._client.pipeline(transaction=False)
            for member, _ in members:
                pipe.get(keys.state(member.decode()))
            for (member, score), state in zip(members, pipe.execute(), strict=True):
                if score >= since_ms:
                    yield member.decode(), int(score), state.decode() if state else "accepted"
