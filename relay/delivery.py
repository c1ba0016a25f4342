"""Delivering one batch: dedup, enrich, validate, rate-limit, send (splitting out bad events),
record, and decide what happens on failure. Independent of Dramatiq: the actor in
``relay.worker`` calls ``Deliverer.deliver`` and turns its answer into ack, delay or retry.

Outcomes of ``deliver``:
- returns ``None``: every event was delivered, dropped as a duplicate or dead-lettered;
- returns ``Defer(ms)``: put the same batch back after ``ms`` (rate limit, Meta throttling);
  this spends no retry;
- returns ``Paused(reason)``: the pixel is paused (``relay.breaker``: Meta, its token or the
  token's permissions are failing); the events not yet settled are back at the head of their
  inbox, their claims released, so ack the message; this spends no retry;
- raises ``TransientError``: let Dramatiq's retry middleware try again with backoff (a failure
  the breaker puts down to the batch, not to Meta).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from redis import Redis, RedisError
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from relay.breaker import Breaker, Gate, pauses_at_once
from relay.clicks import Clicks
from relay.config import PixelSettings, Settings
from relay.deadletters import DeadLetters
from relay.dedup import Claim, Dedup
from relay.errors import (
    DeliveryError,
    InvalidBatchError,
    PermanentError,
    ThrottledError,
    TransientError,
)
from relay.events import (
    Envelope,
    complete_from_click,
    decode_envelope,
    enrich_from_click,
    pack_envelope,
)
from relay.inbox import put_back
from relay.ledger import Entry, Ledger
from relay.limiter import PixelLimiter, PixelRates
from relay.meta_client import MetaClient, SendResult, same_rejection
from relay.metrics import DeliveryObserver
from relay.queues import queue_for
from relay.stats import match_key_counts
from relay.status import PixelActivity
from relay.validation import problem

log = structlog.get_logger("relay.delivery")
SECONDS_PER_DAY = 86_400
THROTTLE_DELAY_MS = 2_000
# Each request of a split is charged to the pixel's limiter. A short wait for it is slept in
# place, up to this much per batch: finishing the split now costs fewer requests than deferring,
# whose next run sends all that is left in one request again (refused again) before it can go
# on splitting. A longer wait defers the events not yet settled, as ``deliver`` does.
SPLIT_WAIT_MAX_MS = 1_000
# Events sent alone when both halves of a refused part are refused alike (``_isolate``).
SPLIT_PROBES = 4


def patient_retry() -> Retry:
    """How often the bookkeeping after Meta's acceptance is tried again while Redis is away.

    Giving up there means a Dramatiq retry, which sends the batch again (a duplicate at Meta).
    The worker's client already waits out about 33 s per command (``relay.worker.redis_client``),
    so five tries cover an outage of nearly three minutes, well inside the actor's time limit.
    Connection errors and timeouts only.
    """
    return Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=4)


@dataclass(frozen=True, slots=True)
class Attempt:
    """Which message this is and how many times it has been tried."""

    batch_id: str
    number: int  # 1-based
    last: bool


@dataclass(frozen=True, slots=True)
class Defer:
    delay_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class Paused:
    reason: str  # 'meta' or 'token' (relay.breaker)
    returned: int  # events put back in the inbox


@dataclass(slots=True)
class _Split:
    """A batch being split: what this attempt has settled, how long it slept for the limiter."""

    pixel: PixelSettings
    attempt: Attempt
    settled: set[str]  # dedup keys delivered or dead-lettered
    slept_ms: int = 0
    reported: bool = False  # the breaker has heard that Meta took a request of this batch


class _SplitDeferred(Exception):
    """The limiter would keep a split waiting longer than ``SPLIT_WAIT_MAX_MS``."""

    def __init__(self, wait_ms: int) -> None:
        super().__init__(f"rate limit: {wait_ms} ms to wait")
        self.wait_ms = wait_ms


def _carries(env: Envelope) -> Callable[[str], bool]:
    user_data = env.event.user_data
    return lambda key: getattr(user_data, key, None) not in (None, "", [])


def _entry(env: Envelope, state: Any, **detail: Any) -> Entry:
    return Entry(env.dedup_key, env.event.event_id, env.pixel_id, env.event.event_name, state,
                 detail, env.received_ms, env.source)


class Deliverer:
    def __init__(self, settings: Settings, client: Redis, meta: MetaClient,
                 clock: Callable[[], float] = time.time,
                 after_send_retry: Retry | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 observer: DeliveryObserver | None = None,
                 on_resume: Callable[[str], object] | None = None) -> None:
        """``on_resume(pixel_id)``: a paused pixel resumed (``relay.breaker.Breaker``)."""
        relay = settings.relay
        ttl_s = relay.ledger_ttl_days * SECONDS_PER_DAY
        self.settings = settings
        self.client = client
        self.meta = meta
        self.clock = clock
        self.sleep = sleep
        self.dedup = Dedup(client, relay.dedup_window_hours * 3600)
        self.ledger = Ledger(client, ttl_s)
        self.dead = DeadLetters(client, ttl_s, relay.dedup_window_hours * 3600)
        self.limiter = PixelLimiter(client)
        self.activity = PixelActivity(client)
        self.breaker = Breaker(client, relay, clock, on_resume)
        self.after_send_retry = after_send_retry or patient_retry()
        self.observer = observer or DeliveryObserver()

    def rates(self, pixel: PixelSettings) -> PixelRates:
        relay = self.settings.relay
        return PixelRates(pixel.requests_per_s or relay.requests_per_s,
                          pixel.events_per_s or relay.events_per_s)

    # -- the whole batch ------------------------------------------------------------------------
    def deliver(self, pixel_id: str, items: Sequence[str | bytes], attempt: Attempt
                ) -> Defer | Paused | None:
        envelopes = self._decode(items)
        pixel = self.settings.pixel(pixel_id)
        if pixel is None:
            self._dead(envelopes, {"kind": "config", "message": f"pixel {pixel_id} is not "
                                   "configured"}, attempt)
            return None
        gate, reason = self.breaker.admit(pixel_id, attempt.batch_id)
        if gate is Gate.HOLD:
            return self._park(pixel, envelopes, attempt, reason, record=True)
        envelopes = self._drop_duplicates(envelopes, attempt)
        if envelopes:
            envelopes = self._enrich(envelopes)
            envelopes = self._drop_invalid(envelopes, attempt)
        if not envelopes:
            if gate is Gate.PROBE:
                self.breaker.skipped(pixel_id, attempt.batch_id)
            return None
        first_request = len(by_test_event_code(envelopes)[0])
        wait_ms = self.limiter.acquire(pixel_id, self.rates(pixel), first_request)
        if wait_ms > 0:
            self.observer.deferred(envelopes, "rate_limit")
            return Defer(wait_ms, "rate limit")
        return self._send(pixel, envelopes, attempt)

    def _decode(self, items: Sequence[str | bytes]) -> list[Envelope]:
        envelopes = []
        for item in items:
            try:
                envelopes.append(decode_envelope(item))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("undecodable_event_dropped", error=str(exc))
        return envelopes

    def _drop_duplicates(self, envelopes: list[Envelope], attempt: Attempt) -> list[Envelope]:
        claims = self.dedup.claim(attempt.batch_id, [e.dedup_key for e in envelopes])
        keep, duplicates, confirmed, seen = [], [], [], set()
        for env, claim in zip(envelopes, claims, strict=True):
            if claim is Claim.ALREADY_DEAD:
                continue  # dead-lettered by this batch before a redelivery
            if claim is Claim.ALREADY_SENT:
                confirmed.append(env)  # delivered before a redelivery: not a new duplicate
                continue
            if claim is Claim.DUPLICATE or env.dedup_key in seen:
                duplicates.append(env)
                continue
            seen.add(env.dedup_key)
            keep.append(env)
        if confirmed:
            # The worker may have died between Meta's answer and the ledger write.
            self._record([_entry(e, "delivered", batch=attempt.batch_id,
                                 confirmed="on redelivery") for e in confirmed])
        if duplicates:
            self._record([_entry(e, "duplicate", batch=attempt.batch_id)
                          for e in duplicates])
            self.observer.duplicate(duplicates)
            log.info("duplicates_dropped", pixel_id=duplicates[0].pixel_id,
                     count=len(duplicates), batch=attempt.batch_id)
        return keep

    def _enrich(self, envelopes: list[Envelope]) -> list[Envelope]:
        click_ids = sorted({e.click_id for e in envelopes if e.click_id})
        if not click_ids:
            return envelopes
        clicks = Clicks(self.client).get_many(click_ids)
        self._note_clicks(envelopes, clicks)
        result = []
        for env in envelopes:
            click = clicks.get(env.click_id or "")
            if click is not None:
                fill = complete_from_click if env.source == "redirect" else enrich_from_click
                env = msgspec.structs.replace(env, event=fill(env.event, click))
            result.append(env)
        return result

    def _note_clicks(self, envelopes: list[Envelope], clicks: dict[str, Any]) -> None:
        """For the dashboard: which later events came from each click (find by click_id; a
        redirect's own events have the click id as event_id and need no note), and per link
        the clicks and the later events attributed to them (counted once per batch run; a
        retried batch counts again)."""
        ttl_s = self.settings.relay.ledger_ttl_days * SECONDS_PER_DAY
        counts: Counter[str] = Counter()
        pipe = self.client.pipeline(transaction=False)
        for env in envelopes:
            if not env.click_id:
                continue
            if env.source != "redirect" or env.event.event_id != env.click_id:
                Clicks.note_later(pipe, env.click_id, env.dedup_key, ttl_s)
            click = clicks.get(env.click_id)
            if click is not None:
                what = "lk.click" if env.source == "redirect" else "lk.conv"
                counts[f"{what}:{click.slug}:{env.event.event_name}"] += 1
        try:
            pipe.execute()
            self.ledger.count(counts, int(self.clock() * 1000))
        except RedisError as exc:
            log.warning("click_notes_lost", error=type(exc).__name__)

    def _drop_invalid(self, envelopes: list[Envelope], attempt: Attempt) -> list[Envelope]:
        now = self.clock()
        keep = []
        max_age = self.settings.relay.max_event_age_days
        for env in envelopes:
            reason = problem(env.event, now, max_age)
            if reason is None:
                keep.append(env)
            else:
                kind = "expired" if reason.startswith("expired") else "invalid"
                self._dead([env], {"kind": kind, "message": reason}, attempt)
        return keep

    # -- sending ----------------------------------------------------------------------------------
    def _send(self, pixel: PixelSettings, envelopes: list[Envelope], attempt: Attempt
              ) -> Defer | Paused | None:
        started = time.perf_counter()
        started_ms = int(self.clock() * 1000)
        settled: set[str] = set()  # delivered or dead-lettered during this attempt
        split = _Split(pixel, attempt, settled)
        try:
            self._send_isolating(split, envelopes)
        except ThrottledError as exc:
            self._succeeded(split)  # Meta is up, only busy
            factor = self.limiter.throttled(pixel.id, sent_ms=started_ms)
            self._log_batch(pixel.id, envelopes, attempt, started, "throttled", exc)
            pending = [e for e in envelopes if e.dedup_key not in settled]
            self._record([_entry(e, "deferred", batch=attempt.batch_id,
                                 attempt=attempt.number, outcome="throttled",
                                 code=exc.code) for e in pending])
            self.observer.deferred(pending, "throttled")
            return Defer(int(THROTTLE_DELAY_MS / factor), f"throttled by Meta (code {exc.code})")
        except TransientError as exc:
            self._log_batch(pixel.id, envelopes, attempt, started, "transient", exc)
            pending = [e for e in envelopes if e.dedup_key not in settled]
            verdict = self.breaker.failed(pixel.id, attempt.batch_id, exc)
            if verdict.holds:  # Meta is failing, not this batch: no attempt spent
                return self._park(pixel, pending, attempt, verdict.reason,
                                  record=verdict.name != "probe_failed", error=exc)
            if attempt.last:
                self._dead(pending, {**exc.as_dict(), "kind": "retries_exhausted"}, attempt)
                return None
            self._record([_entry(e, "attempt", batch=attempt.batch_id,
                                 attempt=attempt.number, outcome="transient",
                                 error=exc.message, code=exc.code) for e in pending])
            self.observer.retried(pending)
            raise
        except PermanentError as exc:
            self._log_batch(pixel.id, envelopes, attempt, started, "permanent", exc)
            pending = [e for e in envelopes if e.dedup_key not in settled]
            if pauses_at_once(exc):
                # The token or its permissions, not the batch: the events wait until mended.
                verdict = self.breaker.failed(pixel.id, attempt.batch_id, exc,
                                              pixel.access_token)
                return self._park(pixel, pending, attempt, verdict.reason,
                                  record=verdict.name != "probe_failed", error=exc)
            self._succeeded(split)  # Meta is up: the request is refused
            self._dead(pending, {**exc.as_dict(), "kind": "rejected"}, attempt)
            return None
        except _SplitDeferred as deferred:
            self._log_batch(pixel.id, envelopes, attempt, started, "rate_limited", None)
            pending = [e for e in envelopes if e.dedup_key not in settled]
            self._record([_entry(e, "deferred", batch=attempt.batch_id,
                                 attempt=attempt.number, outcome="rate limit")
                          for e in pending])
            self.observer.deferred(pending, "rate_limit")
            return Defer(deferred.wait_ms, "rate limit")
        self._log_batch(pixel.id, envelopes, attempt, started, "delivered", None)
        # Meta answered (every part refused for its events, say): Meta is up.
        self._succeeded(split)
        return None

    def _succeeded(self, split: _Split) -> None:
        """Tell the breaker once per batch that Meta took a request, as soon as it did: a
        probe resumes its pixel before the probe's own bookkeeping. Waiting out Redis here
        beats a retry that would only confirm what Meta has."""
        if not split.reported:
            split.reported = True
            self._patiently(split.attempt, lambda: self.breaker.succeeded(
                split.pixel.id, split.attempt.batch_id))

    def _park(self, pixel: PixelSettings, envelopes: Sequence[Envelope], attempt: Attempt,
              reason: str, *, record: bool, error: DeliveryError | None = None) -> Paused:
        """The pixel is paused: put ``envelopes`` back at the head of their inbox, claims
        released, to leave in full batches once it resumes.

        ``record`` adds a ``deferred`` entry (outcome ``paused``) to each event's life; a failed
        probe does not, or the oldest events' lives would gain one entry per probe.
        """
        # Claims first: events back in the inbox under a claim of this batch would be taken for
        # duplicates by the next one.
        self.dedup.release(attempt.batch_id, [e.dedup_key for e in envelopes])
        by_queue: dict[str, list[bytes]] = {}
        for env in envelopes:
            queue = queue_for(env.event.event_name, self.settings.relay)
            by_queue.setdefault(queue, []).append(pack_envelope(env))
        for queue, items in by_queue.items():
            put_back(self.client, queue, pixel.id, items)
        if record and envelopes:
            self.observer.deferred(envelopes, "paused")
            detail: dict[str, Any] = {"batch": attempt.batch_id, "attempt": attempt.number,
                                      "outcome": "paused", "reason": reason}
            if error is not None:
                detail.update(code=error.code, error=error.message)
            self._record([_entry(e, "deferred", **detail) for e in envelopes])
        return Paused(reason, len(envelopes))

    def _send_isolating(self, split: _Split, envelopes: list[Envelope]) -> None:
        """Send, one request per ``test_event_code`` the events came with (nearly always one);
        if Meta blames an event, split that request until the culprits stand alone.

        ``deliver`` charged the limiter for the first request; ``_send_charged`` charges every
        further one. Raises what ``MetaClient.send`` raises, other than ``InvalidBatchError``,
        and ``_SplitDeferred``; ``split.settled`` then says which events are done.
        """
        for i, group in enumerate(by_test_event_code(envelopes)):
            rejection = self._send_part(split, group) if i == 0 else \
                self._send_charged(split, group)
            if rejection is not None:
                self._isolate(split, group, rejection)

    def _isolate(self, split: _Split, envelopes: list[Envelope],
                 rejection: InvalidBatchError) -> None:
        """``envelopes`` were refused together for an event: dead-letter the culprits, deliver
        the rest.

        Halving costs about ``2 * log2(n)`` requests per culprit, but ``2n - 1`` when every event
        is bad (a client bug, a clock off by days). So when both halves are refused alike,
        ``SPLIT_PROBES`` events spread over the part are sent alone; if each is refused alike
        too, the part is bad throughout and the rest goes to the dead letters with them, unsent
        alone (``presumed``): 1 + 2 + 4 = 7 requests for any batch over 8 events. A probe Meta
        accepts (two culprits that happen to fall in both halves) ends that: the probes are
        settled either way and splitting goes on with what is left.
        """
        if len(envelopes) == 1:
            self._reject(split, envelopes, rejection)
            return
        middle = len(envelopes) // 2
        halves = (envelopes[:middle], envelopes[middle:])
        left = self._send_charged(split, halves[0])
        right = self._send_charged(split, halves[1])
        if (left is not None and right is not None and same_rejection(left, right)
                and len(envelopes) > 2 * SPLIT_PROBES
                and self._probe(split, envelopes, rejection)):
            return
        for half, answer in zip(halves, (left, right), strict=True):
            rest = [e for e in half if e.dedup_key not in split.settled]
            if rest and len(rest) < len(half):
                # Probes took some of this half: what is left may hold no culprit any more.
                answer = self._send_charged(split, rest)
            if rest and answer is not None:
                self._isolate(split, rest, answer)

    def _probe(self, split: _Split, envelopes: list[Envelope],
               rejection: InvalidBatchError) -> bool:
        """Send ``SPLIT_PROBES`` events spread over ``envelopes`` alone. If Meta refuses each like
        ``rejection``, dead-letter all the others too and return True."""
        step = len(envelopes) / SPLIT_PROBES
        for i in range(SPLIT_PROBES):
            probe = [envelopes[int(step * (i + 0.5))]]
            answer = self._send_charged(split, probe)
            if answer is None:
                return False
            self._reject(split, probe, answer)
            if not same_rejection(answer, rejection):
                return False
        rest = [e for e in envelopes if e.dedup_key not in split.settled]
        self._dead(rest, {**rejection.as_dict(), "kind": "rejected", "presumed": True},
                   split.attempt)
        split.settled.update(e.dedup_key for e in rest)
        log.warning("batch_presumed_bad", pixel_id=split.pixel.id, batch=split.attempt.batch_id,
                    size=len(envelopes), probes=SPLIT_PROBES, code=rejection.code,
                    subcode=rejection.subcode, fbtrace_id=rejection.fbtrace_id)
        return True

    def _send_charged(self, split: _Split, envelopes: list[Envelope]
                      ) -> InvalidBatchError | None:
        """A further request of a split: charge the limiter for it (waiting briefly), send it."""
        rates = self.rates(split.pixel)
        while (wait_ms := self.limiter.acquire(split.pixel.id, rates, len(envelopes))) > 0:
            if split.slept_ms + wait_ms > SPLIT_WAIT_MAX_MS:
                raise _SplitDeferred(wait_ms)
            self.sleep(wait_ms / 1000)
            split.slept_ms += wait_ms
        return self._send_part(split, envelopes)

    def _send_part(self, split: _Split, envelopes: list[Envelope]) -> InvalidBatchError | None:
        """POST ``envelopes``: None once delivered and recorded, or Meta's refusal naming an
        event (every other error is raised)."""
        started = time.perf_counter()
        outcome = "delivered"
        try:
            result = self.meta.send(split.pixel, [e.event for e in envelopes],
                                    envelopes[0].test_event_code)
        except InvalidBatchError as exc:
            outcome = "invalid_batch"
            return exc
        except DeliveryError as exc:
            outcome = _outcome(exc)
            raise
        finally:
            self.observer.request(split.pixel.id, len(envelopes), time.perf_counter() - started,
                                  outcome)
        self.observer.delivered(envelopes)
        self._delivered(envelopes, result, split)
        split.settled.update(e.dedup_key for e in envelopes)
        return None

    def _reject(self, split: _Split, envelopes: list[Envelope],
                rejection: InvalidBatchError) -> None:
        self._dead(envelopes, {**rejection.as_dict(), "kind": "rejected"}, split.attempt)
        split.settled.update(e.dedup_key for e in envelopes)

    def _delivered(self, envelopes: list[Envelope], result: SendResult, split: _Split) -> None:
        """Meta has the events: record that, outlasting a Redis restart if need be."""
        attempt = split.attempt
        # Marked first: if the worker dies after this, a redelivery will not send them again.
        self._patiently(attempt, lambda: self.dedup.mark_sent(
            attempt.batch_id, [e.dedup_key for e in envelopes]))
        self._succeeded(split)  # then a paused pixel resumes, before the rest of the records
        now_ms = int(self.clock() * 1000)
        self._patiently(attempt, lambda: self._record([
            _entry(e, "delivered", batch=attempt.batch_id, attempt=attempt.number,
                   fbtrace_id=result.fbtrace_id, latency_ms=round(result.latency_ms, 1),
                   received_ms=e.received_ms, source=e.source,
                   delay_ms=now_ms - e.received_ms)
            for e in envelopes
        ], now_ms))
        self._patiently(attempt, lambda: self.ledger.observe_batch(
            envelopes[0].pixel_id, result.latency_ms,
            [(e.event.event_name, now_ms - e.received_ms) for e in envelopes], now_ms))
        self._patiently(attempt, lambda: self._note_delivered(envelopes, now_ms))

    def _note_delivered(self, envelopes: Sequence[Envelope], now_ms: int) -> None:
        """For the dashboard: which match keys the events carried (presence only), and when
        the pixel last delivered."""
        self.ledger.count(match_key_counts(
            (e.pixel_id, e.event.event_name, _carries(e)) for e in envelopes), now_ms)
        self.activity.delivered(envelopes[0].pixel_id, now_ms)

    def _record(self, entries: Sequence[Entry], now_ms: int | None = None) -> None:
        """Ledger entries at the Deliverer's clock (counters land in its minute)."""
        self.ledger.record(entries, int(self.clock() * 1000) if now_ms is None else now_ms)

    def _patiently(self, attempt: Attempt, step: Callable[[], object]) -> None:
        """Run one bookkeeping step, retrying it while Redis is unreachable (``patient_retry``)."""

        def waiting(error: Exception, failures: int) -> None:
            log.warning("bookkeeping_waits_for_redis", batch=attempt.batch_id,
                        failures=failures, error=type(error).__name__)

        self.after_send_retry.call_with_retry(step, waiting, with_failure_count=True)

    def _dead(self, envelopes: Sequence[Envelope], reason: dict[str, Any], attempt: Attempt
              ) -> None:
        if not envelopes:
            return
        self.dead.add(envelopes, reason, int(self.clock() * 1000))
        code = reason.get("code")
        self.observer.dead(envelopes, str(reason.get("kind")),
                           code if isinstance(code, int) else None)
        self.dedup.mark_dead(attempt.batch_id, [e.dedup_key for e in envelopes])
        self._record([_entry(e, "dead", batch=attempt.batch_id, attempt=attempt.number,
                             **reason) for e in envelopes])
        for env in envelopes:
            log.warning("dead_letter", pixel_id=env.pixel_id, event_id=env.event.event_id,
                        event_name=env.event.event_name, attempt=attempt.number,
                        reason=reason.get("kind"), message=reason.get("message"),
                        code=reason.get("code"), subcode=reason.get("subcode"),
                        fbtrace_id=reason.get("fbtrace_id"))

    def _log_batch(self, pixel_id: str, envelopes: Sequence[Envelope], attempt: Attempt,
                   started: float, outcome: str, error: DeliveryError | None) -> None:
        if error is not None:
            try:
                self.activity.failed(pixel_id, error.as_dict(), int(self.clock() * 1000))
            except RedisError as exc:  # the dashboard's note must not change the outcome
                log.warning("pixel_activity_not_noted", pixel_id=pixel_id,
                            error=type(exc).__name__)
        log.info("batch", pixel_id=pixel_id, batch=attempt.batch_id, size=len(envelopes),
                 attempt=attempt.number, outcome=outcome,
                 latency_ms=round((time.perf_counter() - started) * 1000, 1),
                 code=error.code if error else None,
                 fbtrace_id=error.fbtrace_id if error else None,
                 error=error.message if error else None)


def by_test_event_code(envelopes: Sequence[Envelope]) -> list[list[Envelope]]:
    """``envelopes`` in groups that can share a request: the same ``test_event_code`` (Meta
    takes one per request), in order of first appearance; never an empty list."""
    groups: dict[str | None, list[Envelope]] = {}
    for env in envelopes:
        groups.setdefault(env.test_event_code, []).append(env)
    return list(groups.values()) or [[]]


def _outcome(error: DeliveryError) -> str:
    """The ``outcome`` label of a request Meta answered with ``error``."""
    if isinstance(error, ThrottledError):
        return "throttled"
    if isinstance(error, TransientError):
        return "transient"
    return "permanent"
