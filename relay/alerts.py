"""Built-in alerts (``[[alerts]]``) for operators without Prometheus: the conditions of
``ops/prometheus/rules.yml``, evaluated by the elected observer from the relay's state in Redis.

Each condition is about a subject (a pixel, a queue, the relay). When one starts, one message
goes out; when it ends, one more. A condition's next message waits ``alerting.cooldown_s`` after
its last one, so a condition that flaps sends nothing until it has settled on a new state.
What has been announced, and since when each condition has held, is kept in Redis
(``keys.alert_state``, ``keys.alert_seen``), written in one transaction with the messages
(``relay.outbox``), so a newly elected observer neither repeats a start nor forgets an end, and
a duration such as ``throttled_for_s`` does not start again. Messages name the subject, the
condition, the numbers and the dashboard link; never a token or an event's personal data.

Conditions (``relay.config.ALERT_CONDITIONS``):
  delivery_success_low  a pixel delivered < ``success_min_percent`` of its settled events over
                        ``success_window_min`` (delivered / (delivered + dead), ledger counters)
  dead_letters_growing  a pixel had new dead letters in ``success_window_min``
  token_invalid         the pixel health check got Meta code 190
  throttled             the pixel's limiter factor stayed below 1 for ``throttled_for_s``
  oldest_waiting        a queue's oldest waiting event is older than ``oldest_waiting_max_s``
  collector_spooling    the collector's /metrics says it is spooling
  no_live_worker        a queue has had no worker with a fresh heartbeat for a heartbeat timeout
  redis_unreachable     the observer cannot reach Redis (sent by the last elected observer)
  pixel_paused          the pixel's circuit breaker paused its delivery (issue 14)
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import structlog
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from relay import keys
from relay.config import Settings
from relay.notify import Notice
from relay.observe import RelayState
from relay.outbox import Outbox

log = structlog.get_logger("relay.alerts")

TITLES = {
    "delivery_success_low": "delivery success low",
    "dead_letters_growing": "dead letters growing",
    "token_invalid": "access token invalid (Meta code 190)",
    "throttled": "throttled by Meta",
    "oldest_waiting": "events waiting too long",
    "collector_spooling": "collector spooling to disk",
    "no_live_worker": "no live relay worker",
    "redis_unreachable": "Redis unreachable",
    "pixel_paused": "pixel delivery paused",
}


# What a pause's reason asks of the operator (relay.breaker).
_PAUSE_HINTS = {
    "meta": "Meta is failing; the events are sent once it answers again",
    "token": "Meta refuses the token (code 190): put a new one in the pixel's access_token_env "
             "and restart the relay; the events are sent then",
    "permission": "the token lacks a permission for this pixel (Meta code 10 or 200-299): "
                  "grant it (or use a token that has it); the events are sent then",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition that holds now, about one subject, with the numbers that show it."""

    condition: str
    subject: tuple[tuple[str, str], ...]  # e.g. (("pixel", "123"),)
    values: dict[str, Any]
    detail: str

    @property
    def key(self) -> str:
        return "|".join([self.condition, *(f"{k}={v}" for k, v in self.subject)])


class _Announced(msgspec.Struct):
    """What was last said about a condition and subject."""

    firing: bool
    at_ms: int
    since_ms: int  # when the condition was first seen (this time)
    condition: str
    subject: list[tuple[str, str]]


def findings(settings: Settings, state: RelayState, counts: Counter[str],
             collector_spooling: float | None) -> list[Finding]:
    """Every condition that holds in ``state`` (durations such as ``throttled_for_s`` are
    applied by ``Alerts``)."""
    a = settings.alerting
    found = []
    window = a.success_window_min
    for pixel in settings.pixels:
        delivered = sum(n for k, n in counts.items() if k.startswith(f"delivered:{pixel.id}:"))
        dead = sum(n for k, n in counts.items() if k.startswith(f"dead:{pixel.id}:"))
        subject = (("pixel", pixel.id),)
        if delivered + dead and 100 * delivered / (delivered + dead) < a.success_min_percent:
            percent = round(100 * delivered / (delivered + dead), 2)
            found.append(Finding("delivery_success_low", subject, {
                "success_percent": percent, "delivered": delivered, "dead": dead,
                "window_min": window},
                f"{percent} % delivered in the last {window} min ({delivered} delivered, "
                f"{dead} dead; threshold {a.success_min_percent} %)"))
        if dead:
            found.append(Finding("dead_letters_growing", subject, {
                "new_dead_letters": dead, "window_min": window,
                "dead_letters_held": state.dead_letters},
                f"{dead} new dead letters in the last {window} min "
                f"({state.dead_letters} held in all; pixelrelay requeue)"))
    for p in state.pixels:
        subject = (("pixel", p.pixel_id),)
        if p.health_error_code == 190:
            found.append(Finding("token_invalid", subject, {"code": 190},
                                 "Meta answered code 190 to the health check: create a new "
                                 "token and put it in the pixel's access_token_env"))
        if p.limiter_factor < 1:
            found.append(Finding("throttled", subject,
                                 {"rate_factor": round(p.limiter_factor, 3)},
                                 f"sending at {round(100 * p.limiter_factor, 1)} % of its "
                                 "rate after Meta's throttling"))
        if p.paused is not None:
            paused_s = round((state.at_ms - p.paused.since_ms) / 1000)
            found.append(Finding("pixel_paused", subject, {
                "reason": p.paused.reason, "paused_s": paused_s, "code": p.paused.code,
                "waiting_events": p.waiting},
                f"delivery paused ({p.paused.reason}) for {_duration(paused_s * 1000)}, "
                f"{p.waiting} events waiting; {_PAUSE_HINTS.get(p.paused.reason, '')}"))
    for q in state.queues:
        subject = (("queue", q.queue),)
        age = state.oldest_waiting_s(q)
        if age > a.oldest_waiting_max_s:
            found.append(Finding("oldest_waiting", subject, {
                "oldest_waiting_s": round(age), "inbox_events": q.inbox_events},
                f"the oldest waiting event is {round(age)} s old (threshold "
                f"{a.oldest_waiting_max_s} s; {q.inbox_events} events in the inbox)"))
        if q.live_workers < 1:
            found.append(Finding("no_live_worker", subject, {"live_workers": 0},
                                 "no worker serving this queue has a fresh heartbeat"))
    if collector_spooling:
        found.append(Finding("collector_spooling", (("collector", "spool"),),
                             {"spooling": 1}, "the collector writes events to its disk spool"))
    return found


class Alerts:
    """Turns findings into start and end messages, with the cooldown, via an ``Outbox``."""

    def __init__(self, settings: Settings, client: Redis, outbox: Outbox,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._client = client
        self._outbox = outbox
        self._clock = clock
        self._announced: dict[str, _Announced] = {}
        self._seen_since: dict[str, int] = {}  # key -> first ms seen, for durations
        self._seen_saved: dict[str, int] = {}
        self._unsaved = False  # announced while Redis was unreachable, not yet in Redis
        self._loaded = False
        self.dashboard_url = settings.dashboard_link

    def _for_ms(self, condition: str) -> int:
        """How long a condition must hold before it is announced."""
        if condition == "throttled":
            return self.settings.alerting.throttled_for_s * 1000
        if condition == "no_live_worker":  # a restarting worker, or one not beating yet
            return self.settings.relay.heartbeat_timeout_ms
        return 0

    def evaluate(self, found: Iterable[Finding], complete: bool = True) -> list[Notice]:
        """One round: ``found`` holds now. With ``complete``, every announced condition not in
        ``found`` has ended; otherwise (Redis unreachable) only ``found`` is considered, and
        its messages wait in this worker's memory."""
        found = list(found)
        now = int(self._clock() * 1000)
        self._load()
        active: dict[str, Finding] = {}
        for finding in found:
            since = self._seen_since.setdefault(finding.key, now)
            if now - since >= self._for_ms(finding.condition):
                active[finding.key] = finding
        if complete:
            for key in list(self._seen_since):
                if key not in {f.key for f in found}:
                    del self._seen_since[key]
        notices = []
        cooldown_ms = self.settings.alerting.cooldown_s * 1000
        for key, finding in active.items():
            last = self._announced.get(key)
            if last is None or (not last.firing and now - last.at_ms >= cooldown_ms):
                notices.append(self._announce(key, finding, True, now,
                                              self._seen_since.get(key, now)))
        if complete:
            for key, last in list(self._announced.items()):
                if last.firing and key not in active and now - last.at_ms >= cooldown_ms:
                    ended = Finding(last.condition, tuple((k, v) for k, v in last.subject),
                                    {"lasted_s": round((now - last.since_ms) / 1000)},
                                    f"ended after {_duration(now - last.since_ms)}")
                    notices.append(self._announce(key, ended, False, now, last.since_ms))
        if not complete:
            self._outbox.keep_locally(notices)  # Redis is away: kept here, saved later
            self._unsaved = self._unsaved or bool(notices)
        elif notices or self._unsaved or self._seen_since != self._seen_saved:
            # The messages and what they announce are stored together: a worker dying between
            # the two would otherwise repeat a start or lose one.
            seen = dict(self._seen_since)
            if self._outbox.put(notices, also=lambda pipe: self._queue_state(pipe, seen)):
                self._seen_saved, self._unsaved = seen, False
        return notices

    def _announce(self, key: str, finding: Finding, firing: bool, now: int, since: int
                  ) -> Notice:
        subject = dict(finding.subject)
        about = ", ".join(f"{k} {v}" for k, v in finding.subject)
        title = TITLES.get(finding.condition, finding.condition)
        head = "ALERT" if firing else "RESOLVED"
        text = (f"pixelrelay {head}: {title} ({about})\n{finding.detail}\n"
                f"Dashboard: {self.dashboard_url}")
        notice = Notice(finding.condition, subject, firing, text, finding.values,
                        self.dashboard_url, now, uuid.uuid4().hex)
        self._announced[key] = _Announced(firing, now, since, finding.condition,
                                          list(finding.subject))
        log.info("alert", condition=finding.condition, firing=firing, **subject)
        return notice

    # -- what has been announced and seen, kept in Redis for the next observer -------------------
    def _load(self) -> None:
        if self._loaded:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(keys.alert_state())
            pipe.hgetall(keys.alert_seen())
            announced, seen = pipe.execute()
        except Exception as exc:  # noqa: BLE001 - unreachable Redis: start from memory
            log.warning("alert_state_unreadable", error=type(exc).__name__)
            return
        for key, value in announced.items():
            try:
                self._announced[key.decode()] = msgspec.json.decode(value, type=_Announced)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
        for key, value in seen.items():
            if value.isdigit():
                self._seen_since.setdefault(key.decode(), int(value))
        self._seen_saved = dict(self._seen_since)
        self._loaded = True

    def _queue_state(self, pipe: Any, seen: dict[str, int]) -> None:
        """Queue on ``pipe`` the writes of what was announced and what is seen now."""
        for key, announced in self._announced.items():
            pipe.hset(keys.alert_state(), key, msgspec.json.encode(announced))
        pipe.delete(keys.alert_seen())
        if seen:
            pipe.hset(keys.alert_seen(), mapping=seen)

    def forget_loaded(self) -> None:
        """This worker lost the election: read the state again if it is elected later."""
        self._loaded = False
        self._announced.clear()
        self._seen_since.clear()
        self._seen_saved.clear()


def redis_unreachable(since_ms: int, now_ms: int) -> Finding:
    return Finding("redis_unreachable", (("redis", "relay"),),
                   {"unreachable_s": round((now_ms - since_ms) / 1000)},
                   f"the relay cannot reach Redis for {_duration(now_ms - since_ms)}: "
                   "events wait in the collectors' spools")


def _duration(ms: int) -> str:
    seconds = max(0, ms // 1000)
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} min"


def collector_metrics_url(settings: Settings) -> str:
    c = settings.collector
    return settings.alerting.collector_metrics_url or f"http://{c.host}:{c.port}/metrics"


def collector_spooling(client: httpx.Client, url: str) -> float | None:
    """``pixelrelay_collector_spooling`` from the collector's /metrics; None if unreadable."""
    try:
        response = client.get(url)
        response.raise_for_status()
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == "pixelrelay_collector_spooling":
                    return float(sample.value)
    except (httpx.HTTPError, ValueError):
        return None
    return None
