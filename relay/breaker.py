"""Per-pixel circuit breaker: pause a pixel while Meta (or its token) is failing, probe, resume.

It tells "this batch is bad" from "Meta is failing right now". A batch's transient failure
(transport error, timeout, HTTP 5xx, codes 1, 2, 341, 368, ``is_transient``) is counted in the
pixel's recent outcomes; when at least ``relay.pause_after_failures`` of them, from at least two
batches (or a batch and the token check), fall within ``relay.pause_window_s`` and are at least
half of the pixel's requests since the first of them, the pixel **pauses** (reason ``meta``). A
code 190 (token invalid or expired) pauses it at once (reason ``token``), from a batch or from
the token check; so does a batch's permission error, codes 10 and 200-299 (reason
``permission``): like 190 it is about the token and the pixel, not the batch, and every other
batch would meet it too. One batch failing on its own is the batch's problem: Dramatiq retries
it.

While a pixel is paused:
- its batches spend no attempt: the Deliverer puts their events back at the head of their
  inbox (claims released) and the message is acked; the inbox is not cut for it, so events
  pile up there and leave in full batches, oldest first, once it resumes;
- one **probe** goes out per interval: the batch script cuts one real batch of the pixel when
  the probe is due (``BATCH_GATE``), the Deliverer sends it; a failed probe doubles the
  interval from ``relay.probe_min_ms`` up to ``relay.probe_max_ms`` (``meta``) or
  ``relay.token_probe_max_ms`` (``token``, ``permission``);
- the first success (a probe, a batch that was in flight, or for a token pause the minute's
  token check) **resumes** it, as soon as Meta accepted the batch (its bookkeeping follows),
  and ``on_resume`` is told so the backlog is cut at once; a worker started with a different
  token probes a token or permission pause at once. The token check's success does not end a
  permission pause: reading the pixel may be allowed where sending events is not.
Nothing dead-letters because of the pause's length: an event waits until the existing expiry
rule takes it (``relay.max_event_age_days``, an hour before Meta's 7 days), which probe batches
apply from the head of the inbox.

State lives in Redis (``keys.breaker``, ``keys.breaker_recent``) so every worker process agrees;
each step is one Lua script. ``pause_status`` reads it for the dashboard, ``/readyz``, metrics
and alerts (``relay.observe`` exports it as ``pixelrelay_relay_pixel_paused{pixel,reason}``,
``..._paused_seconds`` and ``..._waiting_events``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import structlog
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from relay import keys
from relay.config import RelaySettings
from relay.errors import (
    DeliveryError,
    InvalidBatchError,
    PermanentError,
    ThrottledError,
    TransientError,
)
from relay.meta_client import PERMISSION_CODES, TOKEN_CODES
from relay.queues import QUEUE_NAMES

log = structlog.get_logger("relay.breaker")
# Pauses only an operator (or Meta, for the app) can end: the token or its permissions.
OPERATOR_REASONS = ("token", "permission")
# How long a cut probe batch owns the probe. Its report sets the real next probe time; a probe
# lost with its worker is replaced after this (the redelivered copy is then held, not sent).
PROBE_LEASE_MS = 30_000
RECENT_KEPT = 50

# For the inbox's BATCH script (relay.inbox), given the pixel's ``keys.breaker`` key:
# ``breaker_gate(key, now_ms)`` is 'all' for a flowing pixel, 'none' for a paused one whose
# probe is not due, 'one' when it is due; ``breaker_probe_cut(key, id, now_ms)`` makes the
# batch just cut the probe.
BATCH_GATE = f"""
local function breaker_gate(key, now_ms)
  local s = redis.call('HMGET', key, 'state', 'probe_at_ms')
  if s[1] ~= 'open' then
    return 'all'
  end
  if tonumber(s[2] or 0) > now_ms then
    return 'none'
  end
  return 'one'
end
local function breaker_probe_cut(key, id, now_ms)
  redis.call('HSET', key, 'probe_batch', id, 'probe_at_ms', now_ms + {PROBE_LEASE_MS})
end
"""

_ADMIT = """
local s = redis.call('HMGET', KEYS[1], 'state', 'probe_batch', 'reason')
if s[1] ~= 'open' then
  return {'send', ''}
end
if s[2] == ARGV[1] then
  return {'probe', s[3]}
end
return {'hold', s[3]}
"""

# ARGV: outcome (ok | meta | token | permission | skip), source (batch id or 'check'), now_ms,
# window_ms, failures to pause, probe_min_ms, probe_max_ms, token_probe_max_ms, code, message,
# token fp.
# Returns {verdict, reason, paused_ms, probes}; verdict is one of
# ok | resumed | counted | opened | paused | probe_failed | skipped.
_REPORT = """
local key, recent = KEYS[1], KEYS[2]
local outcome, source, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local window, needed = tonumber(ARGV[4]), tonumber(ARGV[5])
local probe_min, probe_max, token_max = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local code, message, fp = ARGV[9], ARGV[10], ARGV[11]
local s = redis.call('HMGET', key, 'state', 'reason', 'since_ms', 'probe_batch',
                     'probe_interval_ms', 'probes')
local open = s[1] == 'open'
local function pause(reason)
  redis.call('DEL', recent)
  redis.call('HSET', key, 'state', 'open', 'reason', reason, 'since_ms', now,
             'probe_interval_ms', probe_min, 'probe_at_ms', now + probe_min, 'probe_batch', '',
             'probes', 0, 'code', code, 'message', message, 'token_fp', fp, 'last_failure_ms', now)
  return {'opened', reason, 0, 0}
end
if outcome == 'ok' then
  if open then
    if source == 'check' and s[2] ~= 'token' then
      return {'ok', s[2], 0, 0}  -- the token check says nothing about Meta taking events
    end
    redis.call('DEL', key, recent)
    return {'resumed', s[2], now - tonumber(s[3]), tonumber(s[6] or 0)}
  end
  if redis.call('LLEN', recent) > 0 then
    redis.call('LPUSH', recent, 's:' .. now .. ':' .. source)
    redis.call('LTRIM', recent, 0, tonumber(ARGV[12]) - 1)
  end
  return {'ok', '', 0, 0}
end
if outcome == 'skip' then
  if open and s[4] == source then
    redis.call('HSET', key, 'probe_batch', '', 'probe_at_ms', now)
    return {'skipped', s[2], now - tonumber(s[3]), tonumber(s[6] or 0)}
  end
  return {'ok', s[2] or '', 0, 0}
end
local operator = outcome == 'token' or outcome == 'permission'
if not open then
  if operator then
    return pause(outcome)
  end
  redis.call('LPUSH', recent, 't:' .. now .. ':' .. source)
  redis.call('LTRIM', recent, 0, tonumber(ARGV[12]) - 1)
  redis.call('PEXPIRE', recent, window)
  local failures, total, sources, distinct = 0, 0, {}, 0
  for _, item in ipairs(redis.call('LRANGE', recent, 0, -1)) do
    local kind, at, from = string.match(item, '^(%a):(%d+):(.*)$')
    if tonumber(at) >= now - window then
      total = total + 1
      if kind == 't' then
        failures = failures + 1
        if not sources[from] then
          sources[from] = true
          distinct = distinct + 1
        end
      end
    end
  end
  if failures >= needed and distinct >= 2 and failures * 2 >= total then
    return pause('meta')
  end
  return {'counted', '', 0, 0}
end
-- paused already
local reason = s[2]
if operator and reason ~= outcome then
  reason = outcome  -- the more specific, latest cause: only an operator can mend it
  redis.call('HSET', key, 'reason', reason)
end
redis.call('HSET', key, 'code', code, 'message', message, 'last_failure_ms', now)
if operator then
  redis.call('HSET', key, 'token_fp', fp)
end
if s[4] ~= source or source == '' then
  return {'paused', reason, now - tonumber(s[3]), tonumber(s[6] or 0)}
end
local cap = probe_max
if reason == 'token' or reason == 'permission' then
  cap = token_max
end
local interval = math.min(cap, math.max(probe_min, tonumber(s[5] or probe_min) * 2))
local probes = tonumber(s[6] or 0) + 1
redis.call('HSET', key, 'probe_batch', '', 'probe_interval_ms', interval,
           'probe_at_ms', now + interval, 'probes', probes)
return {'probe_failed', reason, now - tonumber(s[3]), probes}
"""

# A worker (re)started with a token other than the one that failed probes at once.
_TOKEN_SEEN = """
local s = redis.call('HMGET', KEYS[1], 'state', 'reason', 'token_fp')
if s[1] == 'open' and (s[2] == 'token' or s[2] == 'permission') and s[3] ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'probe_at_ms', ARGV[2], 'probe_batch', '')
  return 1
end
return 0
"""


class Gate(Enum):
    """What the Deliverer does with a batch of this pixel."""

    SEND = "send"  # the pixel flows
    PROBE = "probe"  # the pixel is paused and this batch is its probe
    HOLD = "hold"  # the pixel is paused: back to the inbox, no attempt spent


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the breaker made of a batch's outcome."""

    name: str  # ok | resumed | counted | opened | paused | probe_failed | skipped
    reason: str  # meta | token | permission | '' (flowing)
    paused_ms: int = 0
    probes: int = 0

    @property
    def holds(self) -> bool:
        """The pixel is paused: the batch's pending events go back to the inbox."""
        return self.name in ("opened", "paused", "probe_failed")


@dataclass(frozen=True, slots=True)
class PixelPause:
    """A pixel's delivery state, as ``pause_status`` reads it.

    ``waiting`` counts the events in the pixel's inboxes (all queues), paused or not; the
    others are empty or 0 while the pixel flows.
    """

    pixel_id: str
    paused: bool
    reason: str  # meta (Meta failing), token (190), permission (10, 200-299), '' flowing
    since_ms: int
    waiting: int
    code: int | None
    message: str
    probes: int  # failed probes so far
    next_probe_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {"pixel_id": self.pixel_id, "paused": self.paused, "reason": self.reason,
                "since_ms": self.since_ms, "waiting": self.waiting, "code": self.code,
                "message": self.message, "probes": self.probes,
                "next_probe_ms": self.next_probe_ms}


def pauses_at_once(error: DeliveryError) -> bool:
    """A permanent error about the token or its permissions (190; 10, 200-299), not about the
    batch: the pixel pauses instead of dead-lettering the batch."""
    return (isinstance(error, PermanentError) and not isinstance(error, InvalidBatchError)
            and error.code is not None
            and (error.code in TOKEN_CODES or error.code in PERMISSION_CODES))


def _outcome_of(error: DeliveryError) -> str:
    if error.code in TOKEN_CODES:
        return "token"
    if pauses_at_once(error):
        return "permission"
    return "meta"


def token_fingerprint(access_token: str) -> str:
    """A short digest telling two tokens apart; the token itself is never stored."""
    return hashlib.sha256(access_token.encode()).hexdigest()[:16]


class Breaker:
    """The per-pixel breaker shared by every worker through Redis; clock injected."""

    def __init__(self, client: Redis, settings: RelaySettings,
                 clock: Callable[[], float] = time.time,
                 on_resume: Callable[[str], object] | None = None) -> None:
        """``on_resume(pixel_id)`` is called when a pixel resumes (the worker cuts its backlog
        at once instead of at the next pump round)."""
        self._client = client
        self._settings = settings
        self._clock = clock
        self._on_resume = on_resume
        self._admit = client.register_script(_ADMIT)
        self._report = client.register_script(_REPORT)
        self._token_seen = client.register_script(_TOKEN_SEEN)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def admit(self, pixel_id: str, batch_id: str) -> tuple[Gate, str]:
        """May this batch be sent? (gate, pause reason)."""
        gate, reason = self._admit(keys=[keys.breaker(pixel_id)], args=[batch_id])
        return Gate(_text(gate)), _text(reason)

    def succeeded(self, pixel_id: str, source: str) -> Verdict:
        """Meta answered about the batch (accepted, refused an event, throttled)."""
        return self._outcome(pixel_id, "ok", source)

    def failed(self, pixel_id: str, source: str, error: DeliveryError,
               access_token: str = "") -> Verdict:
        """A transient failure, a code 190 or a permission error (``pauses_at_once``), of a
        batch (``source``: its id) or the check; ``access_token`` is the token that was refused
        (only its fingerprint is kept)."""
        outcome = _outcome_of(error)
        fp = (token_fingerprint(access_token)
              if outcome in OPERATOR_REASONS and access_token else "")
        return self._outcome(pixel_id, outcome, source, error, fp)

    def skipped(self, pixel_id: str, batch_id: str) -> Verdict:
        """A probe batch had nothing left to send (duplicates, expired): probe again now."""
        return self._outcome(pixel_id, "skip", batch_id)

    def checked(self, pixel_id: str, error: DeliveryError | None,
                access_token: str = "") -> Verdict | None:
        """The token check's answer: a success ends a token pause, a 190 starts one, a
        transient failure counts like a batch's. Other errors leave the breaker alone."""
        if error is None:
            return self._outcome(pixel_id, "ok", "check")
        if error.code in TOKEN_CODES or (isinstance(error, TransientError)
                                        and not isinstance(error, ThrottledError)):
            return self.failed(pixel_id, "check", error, access_token)
        return None

    def token_seen(self, pixel_id: str, access_token: str) -> bool:
        """This worker sends with ``access_token``: if the pixel is paused for another token,
        probe now (a new environment value and a restart or reload). True if it will."""
        due = self._token_seen(keys=[keys.breaker(pixel_id)],
                               args=[token_fingerprint(access_token), self._now_ms()])
        if due:
            log.info("pixel_token_changed_probing", pixel_id=pixel_id)
        return bool(due)

    def _outcome(self, pixel_id: str, outcome: str, source: str,
                 error: DeliveryError | None = None, fp: str = "") -> Verdict:
        s = self._settings
        raw = self._report(
            keys=[keys.breaker(pixel_id), keys.breaker_recent(pixel_id)],
            args=[outcome, source, self._now_ms(), s.pause_window_s * 1000,
                  s.pause_after_failures, s.probe_min_ms, s.probe_max_ms, s.token_probe_max_ms,
                  "" if error is None or error.code is None else error.code,
                  "" if error is None else error.message[:300], fp, RECENT_KEPT],
        )
        verdict = Verdict(_text(raw[0]), _text(raw[1]), int(raw[2]), int(raw[3]))
        self._log(pixel_id, verdict, source, error)
        if verdict.name == "resumed" and self._on_resume is not None:
            self._on_resume(pixel_id)
        return verdict

    def _log(self, pixel_id: str, verdict: Verdict, source: str,
             error: DeliveryError | None) -> None:
        code = error.code if error else None
        if verdict.name == "opened":
            log.warning("pixel_paused", pixel_id=pixel_id, reason=verdict.reason, code=code,
                        error=error.message if error else None, by=source)
        elif verdict.name == "resumed":
            log.warning("pixel_resumed", pixel_id=pixel_id, reason=verdict.reason,
                        paused_s=round(verdict.paused_ms / 1000, 1), failed_probes=verdict.probes,
                        by=source)
        elif verdict.name == "probe_failed":
            log.info("pixel_probe_failed", pixel_id=pixel_id, reason=verdict.reason, code=code,
                     paused_s=round(verdict.paused_ms / 1000, 1), failed_probes=verdict.probes)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- reading: dashboard, /readyz, metrics, alerts ----------------------------------------------
def pause_status(client: Redis, pixel_ids: Iterable[str]) -> dict[str, PixelPause]:
    """Each pixel's pause state, reason, since when and waiting count, in one round trip.

    The one reading function for the dashboard (issue 8), ``/readyz``, metrics and alerts
    (issue 12): ``pause_status(client, [p.id for p in settings.pixels])``; asyncio callers use
    ``pause_status_async``. ``PixelPause.as_dict`` gives the JSON shape.
    """
    ids = list(pixel_ids)
    pipe = client.pipeline(transaction=False)
    queue_pause_reads(pipe, ids)
    return decode_pause_reads(ids, pipe.execute())


async def pause_status_async(client: AsyncRedis, pixel_ids: Iterable[str]
                             ) -> dict[str, PixelPause]:
    """``pause_status`` for an asyncio client (the collector's ``/readyz``)."""
    ids = list(pixel_ids)
    pipe = client.pipeline(transaction=False)
    queue_pause_reads(pipe, ids)
    return decode_pause_reads(ids, await pipe.execute())


def queue_pause_reads(pipe: Any, pixel_ids: Sequence[str]) -> None:
    """Queue on a pipeline (sync or asyncio) the reads ``decode_pause_reads`` decodes."""
    for pixel_id in pixel_ids:
        pipe.hgetall(keys.breaker(pixel_id))
        for queue in QUEUE_NAMES.values():
            pipe.llen(keys.inbox(queue, pixel_id))


def decode_pause_reads(pixel_ids: Sequence[str], replies: Sequence[Any]
                       ) -> dict[str, PixelPause]:
    found = iter(replies)
    result = {}
    for pixel_id in pixel_ids:
        raw = {_text(k): _text(v) for k, v in next(found).items()}
        waiting = sum(int(next(found)) for _ in QUEUE_NAMES)
        result[pixel_id] = decode_pause(pixel_id, raw, waiting)
    return result


def decode_pause(pixel_id: str, raw: dict[str, str], waiting: int) -> PixelPause:
    """A ``keys.breaker`` hash (decoded to str) as a ``PixelPause``."""
    paused = raw.get("state") == "open"
    code = raw.get("code", "")
    return PixelPause(
        pixel_id=pixel_id, paused=paused, reason=raw.get("reason", "") if paused else "",
        since_ms=int(raw.get("since_ms", 0) or 0) if paused else 0, waiting=waiting,
        code=int(code) if paused and code.lstrip("-").isdigit() else None,
        message=raw.get("message", "") if paused else "",
        probes=int(raw.get("probes", 0) or 0) if paused else 0,
        next_probe_ms=int(raw.get("probe_at_ms", 0) or 0) if paused else 0,
    )
