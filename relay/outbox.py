"""The outbox of built-in alert messages, kept in Redis: a message leaves it only once its
endpoint took it.

``Outbox.put`` stores messages (one list per endpoint, ``keys.alert_outbox``) in one transaction
with the caller's own writes (the alerts' announced state), and returns at once; a thread of its
own sends them. Only the elected observer sends what Redis holds (``may_send``): when it dies,
or restarts while the endpoint is down, the worker elected next sends what is pending. A lease
per endpoint (``keys.alert_sender``) keeps two workers that both believe they are elected for a
moment from sending one message twice at once.

A message the endpoint did not take (down, timeout, non-2xx) is tried again after 1, 2, 4 ... s
up to ``alerting.retry_max_s`` (Telegram's ``retry_after`` honoured); that schedule is in Redis
too (``keys.alert_outbox_state``), so a new sender neither forgets it nor hammers. Messages to
one endpoint keep their order; an endpoint that is down holds up neither the others, nor the
observer, nor delivery.

Bounded: at most ``alerting.outbox_max_messages`` wait per endpoint. Beyond that the oldest
waiting ones (never the first, which may be on its way) are dropped, logged by condition and
counted, and the endpoint's next message says how many were dropped.

While Redis is unreachable, messages (the ``redis_unreachable`` alert) wait in this worker's
memory and this worker sends them, elected or not (no election is possible without Redis),
before anything stored for the same endpoint. They are lost only if this worker dies before
the endpoint takes them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import structlog
from redis import Redis, RedisError

from relay import keys
from relay.config import AlertSettings, Settings
from relay.notify import Notice, SendFailed, endpoint_key, send

log = structlog.get_logger("relay.outbox")
FIRST_RETRY_S = 1.0
IDLE_POLL_S = 1.0  # how often the sender looks for messages another worker stored
NOTHING_DUE_S = 3600.0
LEASE_MARGIN_MS = 5_000  # a sender's lease: the endpoint's timeout plus this
DROPPED = "alerts_dropped"

# KEYS: outbox list, its state hash. ARGV: most messages kept, then the messages.
# Returns the messages dropped to make room.
_PUT = """
for i = 2, #ARGV do
  redis.call('RPUSH', KEYS[1], ARGV[i])
end
local over = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
if over <= 0 then
  return {}
end
-- the oldest go, but the first: it may be on its way to the endpoint right now
local dropped = redis.call('LRANGE', KEYS[1], 1, over)
local first = redis.call('LPOP', KEYS[1])
redis.call('LTRIM', KEYS[1], over, -1)
redis.call('LPUSH', KEYS[1], first)
redis.call('HINCRBY', KEYS[2], 'dropped', over)
return dropped
"""

# KEYS: outbox list, state hash, sender lease. ARGV: worker id, lease ms, now ms.
# {'empty'} | {'wait', ms} | {'busy', ms} | {'send', first message or '', dropped, failures}
_TAKE = """
local s = redis.call('HMGET', KEYS[2], 'next_try_ms', 'dropped', 'failures')
local dropped = tonumber(s[2] or 0)
local first = redis.call('LINDEX', KEYS[1], 0)
if not first and dropped <= 0 then
  return {'empty'}
end
local wait = tonumber(s[1] or 0) - tonumber(ARGV[3])
if wait > 0 then
  return {'wait', tostring(wait)}
end
local owner = redis.call('GET', KEYS[3])
if owner and owner ~= ARGV[1] then
  return {'busy', tostring(redis.call('PTTL', KEYS[3]))}
end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
return {'send', first or '', tostring(dropped), tostring(tonumber(s[3] or 0))}
"""

# KEYS: outbox list, state hash, sender lease. ARGV: worker id, message sent ('' for the
# dropped count), dropped count announced. Returns the messages left.
_SENT = """
if ARGV[2] ~= '' and redis.call('LINDEX', KEYS[1], 0) == ARGV[2] then
  redis.call('LPOP', KEYS[1])
end
if tonumber(ARGV[3]) > 0 then
  redis.call('HINCRBY', KEYS[2], 'dropped', -tonumber(ARGV[3]))
end
redis.call('HDEL', KEYS[2], 'failures', 'next_try_ms')
if redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('DEL', KEYS[3])
end
return redis.call('LLEN', KEYS[1])
"""

# KEYS: state hash, sender lease. ARGV: worker id, failures in a row, next try ms.
_FAILED = """
redis.call('HSET', KEYS[1], 'failures', ARGV[2], 'next_try_ms', ARGV[3])
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
return 1
"""


@dataclass
class _Endpoint:
    alert: AlertSettings
    client: httpx.Client
    key: str
    # Kept in memory while Redis is unreachable (sent by this worker only).
    local: deque[Notice] = field(default_factory=deque)
    local_dropped: int = 0
    local_failures: int = 0
    local_next_try: float = 0.0

    def wants(self, notice: Notice) -> bool:
        return not self.alert.conditions or notice.condition in self.alert.conditions

    @property
    def redis_keys(self) -> list[str]:
        return [keys.alert_outbox(self.key), keys.alert_outbox_state(self.key),
                keys.alert_sender(self.key)]


class Outbox:
    """Per-endpoint queues of alert messages in Redis, sent and retried by one thread."""

    def __init__(self, client: Redis, settings: Settings, *,
                 may_send: Callable[[], bool] = lambda: True, worker_id: str = "",
                 transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``may_send``: whether this worker is the elected sender now (the observer)."""
        self._client = client
        self._endpoints = [
            _Endpoint(alert, httpx.Client(timeout=alert.timeout_ms / 1000, transport=transport),
                      endpoint_key(alert))
            for alert in settings.alerts
        ]
        self._settings = settings.alerting
        self._dashboard = settings.dashboard_link
        self._may_send = may_send
        self._worker_id = worker_id or uuid.uuid4().hex
        self._clock = clock
        self._put = client.register_script(_PUT)
        self._take = client.register_script(_TAKE)
        self._sent = client.register_script(_SENT)
        self._failed = client.register_script(_FAILED)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay-alerts", daemon=True)
        self.sent = 0

    # -- queueing ---------------------------------------------------------------------------------
    def put(self, notices: Sequence[Notice], also: Callable[[Any], object] | None = None
            ) -> bool:
        """Store ``notices`` for each endpoint that wants them, and run ``also(pipeline)`` (the
        caller's writes) in the same transaction. If Redis refuses, the notices wait in memory
        instead and ``also`` is not done: False."""
        wanted = [(e, [n for n in notices if e.wants(n)]) for e in self._endpoints]
        wanted = [(e, chosen) for e, chosen in wanted if chosen]
        if not wanted and also is None:
            return True
        try:
            pipe = self._client.pipeline(transaction=True)
            for endpoint, chosen in wanted:
                self._put(keys=endpoint.redis_keys[:2],
                          args=[self._settings.outbox_max_messages,
                                *(msgspec.json.encode(n) for n in chosen)], client=pipe)
            if also is not None:
                also(pipe)
            replies = pipe.execute()
        except RedisError as exc:
            log.warning("alert_outbox_unstored", error=type(exc).__name__,
                        messages=len(notices))
            self.keep_locally(notices)
            return False
        for (endpoint, _), dropped in zip(wanted, replies, strict=False):
            for raw in dropped:
                self._log_dropped(endpoint, raw)
        self._wake.set()
        return True

    def keep_locally(self, notices: Sequence[Notice]) -> None:
        """Queue ``notices`` in this worker's memory (Redis is unreachable): sent by this
        worker, before what Redis holds for the same endpoint."""
        limit = self._settings.outbox_max_messages
        with self._lock:
            for endpoint in self._endpoints:
                for notice in notices:
                    if not endpoint.wants(notice):
                        continue
                    if len(endpoint.local) >= limit:
                        dropped = endpoint.local.popleft()
                        endpoint.local_dropped += 1
                        log.error("alert_dropped", kind=endpoint.alert.kind,
                                  condition=dropped.condition, waiting=limit, **dropped.subject)
                    endpoint.local.append(notice)
        self._wake.set()

    def pending(self) -> int:
        """Messages waiting, in Redis and in memory (a count of dropped ones to announce
        counts as one)."""
        with self._lock:
            count = sum(len(e.local) + bool(e.local_dropped) for e in self._endpoints)
        try:
            pipe = self._client.pipeline(transaction=False)
            for endpoint in self._endpoints:
                list_key, state_key, _ = endpoint.redis_keys
                pipe.llen(list_key)
                pipe.hget(state_key, "dropped")
            replies = pipe.execute()
        except RedisError:
            return count
        for waiting, dropped in zip(replies[::2], replies[1::2], strict=True):
            count += int(waiting) + (int(dropped or 0) > 0)
        return count

    # -- sending ----------------------------------------------------------------------------------
    def send_due(self) -> float:
        """Try the first message of each endpoint that is due; seconds until the next try of a
        message known now (the thread also looks every ``IDLE_POLL_S`` for new ones)."""
        wait = NOTHING_DUE_S
        for endpoint in self._endpoints:
            local_wait = self._send_local(endpoint)
            if local_wait is not None:  # memory first: it is older than what Redis holds
                wait = min(wait, local_wait)
                continue
            if not self._may_send():
                continue
            try:
                wait = min(wait, self._send_stored(endpoint))
            except RedisError as exc:
                log.warning("alert_outbox_unreadable", kind=endpoint.alert.kind,
                            error=type(exc).__name__)
        return max(0.0, wait)

    def _send_stored(self, endpoint: _Endpoint) -> float:
        lease_ms = endpoint.alert.timeout_ms + LEASE_MARGIN_MS
        reply = [_text(r) for r in self._take(
            keys=endpoint.redis_keys, args=[self._worker_id, lease_ms, self._now_ms()])]
        if reply[0] == "empty":
            return NOTHING_DUE_S
        if reply[0] in ("wait", "busy"):
            return max(0.05, int(reply[1]) / 1000)
        raw, dropped, failures = reply[1], int(reply[2]), int(reply[3])
        if dropped > 0:
            notice = self._dropped_notice(endpoint, dropped)
        else:
            try:
                notice = msgspec.json.decode(raw, type=Notice)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.error("alert_undecodable_dropped", kind=endpoint.alert.kind)
                self._sent(keys=endpoint.redis_keys, args=[self._worker_id, raw, 0])
                return 0.0
        try:
            send(endpoint.client, endpoint.alert, notice)
        except SendFailed as exc:
            pause = self._pause(failures + 1, exc)
            self._failed(keys=endpoint.redis_keys[1:], args=[
                self._worker_id, failures + 1, self._now_ms() + int(pause * 1000)])
            self._log_failed(endpoint, notice, exc, failures + 1, pause)
            return pause
        left = int(self._sent(keys=endpoint.redis_keys,
                              args=[self._worker_id, "" if dropped else raw, dropped]))
        self._log_sent(endpoint, notice)
        return 0.0 if left or dropped else NOTHING_DUE_S

    def _send_local(self, endpoint: _Endpoint) -> float | None:
        """Try this worker's in-memory first message; None when there is none."""
        with self._lock:
            first = endpoint.local[0] if endpoint.local else None
            dropped = endpoint.local_dropped
        if first is None and not dropped:
            return None
        now = self._clock()
        if now < endpoint.local_next_try:
            return endpoint.local_next_try - now
        notice = self._dropped_notice(endpoint, dropped) if dropped else first
        assert notice is not None
        try:
            send(endpoint.client, endpoint.alert, notice)
        except SendFailed as exc:
            endpoint.local_failures += 1
            pause = self._pause(endpoint.local_failures, exc)
            endpoint.local_next_try = self._clock() + pause
            self._log_failed(endpoint, notice, exc, endpoint.local_failures, pause)
            return pause
        endpoint.local_failures, endpoint.local_next_try = 0, 0.0
        with self._lock:
            if dropped:
                endpoint.local_dropped -= dropped
            else:
                endpoint.local.popleft()
        self._log_sent(endpoint, notice)
        return 0.0

    def _pause(self, failures: int, exc: SendFailed) -> float:
        pause = min(float(self._settings.retry_max_s), FIRST_RETRY_S * 2 ** (failures - 1))
        if exc.retry_after_s is not None:
            pause = max(pause, exc.retry_after_s)
        return pause

    def _dropped_notice(self, endpoint: _Endpoint, dropped: int) -> Notice:
        limit = self._settings.outbox_max_messages
        text = (f"pixelrelay: {dropped} alert message{'s' if dropped != 1 else ''} to this "
                f"endpoint {'were' if dropped != 1 else 'was'} dropped: more than {limit} "
                "waited while it could not be reached (the relay's log names each, "
                "alert_dropped).")
        return Notice(DROPPED, {"endpoint": endpoint.alert.kind}, True,
                      f"{text}\nDashboard: {self._dashboard}",
                      {"dropped": dropped, "outbox_max_messages": limit}, self._dashboard,
                      self._now_ms(), uuid.uuid4().hex)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- logs -------------------------------------------------------------------------------------
    def _log_sent(self, endpoint: _Endpoint, notice: Notice) -> None:
        self.sent += 1
        log.info("alert_sent", kind=endpoint.alert.kind, condition=notice.condition,
                 firing=notice.firing, id=notice.id, **notice.subject)

    def _log_failed(self, endpoint: _Endpoint, notice: Notice, exc: SendFailed, failures: int,
                    pause: float) -> None:
        log.warning("alert_send_failed", kind=endpoint.alert.kind, condition=notice.condition,
                    reason=str(exc), failures=failures, retry_in_s=round(pause, 1))

    def _log_dropped(self, endpoint: _Endpoint, raw: bytes) -> None:
        try:
            notice = msgspec.json.decode(raw, type=Notice)
            about: dict[str, Any] = {"condition": notice.condition, **notice.subject}
        except (msgspec.DecodeError, msgspec.ValidationError):
            about = {}
        log.error("alert_dropped", kind=endpoint.alert.kind,
                  waiting=self._settings.outbox_max_messages, **about)

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                wait = self.send_due()
            except Exception as exc:  # noqa: BLE001 - the sender must outlive any surprise
                log.warning("alert_outbox_error", error=type(exc).__name__)
                wait = FIRST_RETRY_S
            if wait > 0:
                self._wake.wait(min(wait, IDLE_POLL_S))
                self._wake.clear()

    def start(self) -> None:
        if self._endpoints:
            self._thread.start()

    def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Give pending messages a last chance (this worker's own, and Redis's if it is the
        sender), then stop the thread; what is left in Redis waits for the next sender."""
        deadline = time.monotonic() + flush_timeout_s
        while (time.monotonic() < deadline and self._thread.is_alive()
               and (self._held_locally() or (self._may_send() and self.pending()))):
            time.sleep(0.05)
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(flush_timeout_s)
        for endpoint in self._endpoints:
            endpoint.client.close()

    def _held_locally(self) -> int:
        with self._lock:
            return sum(len(e.local) + bool(e.local_dropped) for e in self._endpoints)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
