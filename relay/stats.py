"""Reading the relay's per-minute counters and histograms for a time window (the dashboard).

The ledger (``relay.ledger``) writes one hash per minute: counters ``<what>:<pixel>:<event_name>``
(``received`` from the collector's store script, then ``delivered``, ``attempt`` (a retry),
``dead``, ``duplicate``, ``deferred``, and the match keys ``mk.<key>`` of delivered events) and
latency buckets. A window of an hour reads its 60 minute hashes. Longer windows read one hash
per past hour: each is added up from its 60 minutes the first time it is asked for and kept
(``keys.counters_hour``), so a 7-day view costs about 230 hash reads, not 10,080. No key is ever
searched for: every key read is computed from the clock.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from redis import Redis

from relay import keys
from relay.ledger import COUNTER_TTL_S, DELAY_BUCKETS_MS, LATENCY_BUCKETS_MS

RangeName = Literal["1h", "24h", "7d"]
RANGES: dict[str, tuple[int, int]] = {  # name -> (buckets, minutes per bucket)
    "1h": (60, 1),
    "24h": (24, 60),
    "7d": (168, 60),
}
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
ROLLUP_AFTER_MS = 2 * MINUTE_MS  # an hour is added up once its last minute is this old
_ROLLED = "_rolled"
MATCH_KEYS = ("em", "ph", "fbc", "fbp", "external_id", "client_ip_address",
              "client_user_agent")
MATCH_KEY_LABELS = {"em": "email", "ph": "phone", "fbc": "fbc", "fbp": "fbp",
                    "external_id": "external_id", "client_ip_address": "IP",
                    "client_user_agent": "user agent"}
FUNNEL_STATES = ("received", "duplicate", "dead", "delivered")


@dataclass(frozen=True, slots=True)
class Bucket:
    start_ms: int
    counts: dict[str, int]  # field -> count (``<what>:<pixel>:<event_name>``)


@dataclass
class Window:
    """Counters and latency histograms of one time window, bucketed for charts.

    Each counter field is parsed once, into totals and per-bucket series by (what, pixel,
    event name), so a page asking for dozens of figures does not walk the raw fields again."""

    name: str
    bucket_ms: int
    buckets: list[Bucket]
    latency: dict[str, float] = field(default_factory=dict)  # histogram fields, added up
    _totals: Counter[tuple[str, str, str]] = field(init=False, repr=False)
    _series: dict[tuple[str, str | None, str | None], list[int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        totals: Counter[tuple[str, str, str]] = Counter()
        series: dict[tuple[str, str | None, str | None], list[int]] = {}
        count = len(self.buckets)
        parsed: dict[str, tuple[tuple[str, str, str], list[list[int]]] | None] = {}
        for i, bucket in enumerate(self.buckets):
            for name, n in bucket.counts.items():
                if name in parsed:
                    entry = parsed[name]
                else:
                    entry = parsed[name] = self._parse(name, series, count)
                if entry is None:
                    continue
                key, targets = entry
                totals[key] += n
                for values in targets:
                    values[i] += n
        self._totals = totals
        self._series = series

    def extended(self, additions: Mapping[int, tuple[Mapping[str, int], Mapping[str, float]]]
                 ) -> Window:
        """A copy with more counts and latency added into some buckets (by index)."""
        result = copy.copy(self)
        result._totals = Counter(self._totals)
        result._series = {k: list(v) for k, v in self._series.items()}
        result.latency = dict(self.latency)
        result.buckets = list(self.buckets)
        count = len(self.buckets)
        for i, (counts, latency) in additions.items():
            old = result.buckets[i]
            result.buckets[i] = Bucket(old.start_ms, dict(Counter(old.counts) + Counter(counts)))
            for name, n in counts.items():
                entry = Window._parse(name, result._series, count)
                if entry is None:
                    continue
                key, targets = entry
                result._totals[key] += n
                for values in targets:
                    values[i] += n
            for name, v in latency.items():
                result.latency[name] = result.latency.get(name, 0.0) + v
        return result

    @staticmethod
    def _parse(name: str, series: dict[tuple[str, str | None, str | None], list[int]],
               count: int) -> tuple[tuple[str, str, str], list[list[int]]] | None:
        """A field name's (what, pixel, event name) and the series it adds to (made once)."""
        pieces = name.split(":", 2)
        if len(pieces) != 3:
            return None
        what, pixel, event_name = pieces
        targets = [series.setdefault(k, [0] * count) for k in (
            (what, None, None), (what, pixel, None), (what, None, event_name))]
        return (what, pixel, event_name), targets

    def total(self, what: str, pixel: str | None = None, event_name: str | None = None) -> int:
        if pixel is not None and event_name is not None:
            return self._totals.get((what, pixel, event_name), 0)
        return sum(n for (w, p, e), n in self._totals.items()
                   if w == what and (pixel is None or p == pixel)
                   and (event_name is None or e == event_name))

    def series(self, what: str, pixel: str | None = None, event_name: str | None = None
               ) -> list[int]:
        return list(self._series.get((what, pixel, event_name), [0] * len(self.buckets)))

    def by(self, what: str, part: Literal["pixel", "event_name"]) -> dict[str, int]:
        """Totals of ``what`` per pixel or per event name."""
        result: Counter[str] = Counter()
        for (w, p, e), n in self._totals.items():
            if w == what:
                result[p if part == "pixel" else e] += n
        return dict(result)

    def names(self, part: Literal["pixel", "event_name"],
              what: Iterable[str] | None = None) -> list[str]:
        """Pixels or event names seen in the window (in the counters named by ``what``)."""
        wanted = None if what is None else set(what)
        return sorted({p if part == "pixel" else e for (w, p, e) in self._totals
                       if wanted is None or w in wanted})

    def per_event(self, what: str, pixel: str) -> dict[str, int]:
        """Totals of ``what`` per event name for one pixel (or link slug)."""
        return {e: n for (w, p, e), n in self._totals.items() if w == what and p == pixel}

    def event_names_of(self, pixel: str) -> list[str]:
        return sorted({e for (_, p, e) in self._totals if p == pixel})

    def coverage(self, pixel: str | None = None, event_name: str | None = None
                 ) -> dict[str, float | None]:
        """Share of delivered events that carried each match key (None when none delivered)."""
        delivered = self.total("delivered", pixel, event_name)
        return {k: (self.total(f"mk.{k}", pixel, event_name) / delivered if delivered else None)
                for k in MATCH_KEYS}

    def request_latency(self, pixel: str | None = None) -> Percentiles:
        """Meta's request latency (one observation per request)."""
        prefix = [f"{pixel}:"] if pixel else None
        return _percentiles(self.latency, LATENCY_BUCKETS_MS, prefix, delay=False)

    def delivery_latency(self, pixel: str | None = None) -> Percentiles:
        """Collector receipt to Meta's acceptance (one observation per event)."""
        return _percentiles(self.latency, DELAY_BUCKETS_MS,
                            [f"delay:{pixel}:"] if pixel else None, delay=True)


@dataclass(frozen=True, slots=True)
class Percentiles:
    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None


def _percentiles(fields: dict[str, float], bounds: Sequence[int], prefixes: list[str] | None,
                 delay: bool) -> Percentiles:
    """Percentiles estimated from histogram buckets (linear inside a bucket, as Prometheus's
    histogram_quantile does); the last bucket (above the top bound) reports the top bound."""
    buckets: Counter[str] = Counter()
    total = 0.0
    count = 0
    for name, value in fields.items():
        is_delay = name.startswith("delay:")
        if is_delay != delay:
            continue
        if prefixes is not None and not any(name.startswith(p) for p in prefixes):
            continue
        suffix = name.rsplit(":", 1)[1]
        if suffix == "count":
            count += int(value)
        elif suffix == "sum_ms":
            total += value
        else:
            buckets[suffix] += int(value)
    if count == 0:
        return Percentiles(0, None, None, None, None)
    ordered = [(b, buckets.get(str(b), 0)) for b in bounds] + [(bounds[-1], buckets.get("inf", 0))]

    def quantile(q: float) -> float:
        rank = q * sum(n for _, n in ordered)
        seen, lower = 0.0, 0.0
        for upper, n in ordered:
            if n and seen + n >= rank:
                return lower + (upper - lower) * (rank - seen) / n
            seen += n
            lower = upper
        return float(bounds[-1])

    return Percentiles(count, quantile(0.5), quantile(0.95), quantile(0.99), total / count)


# -- reading a window ---------------------------------------------------------------------------
FRESH_MINUTES = 2  # the current and the previous minute may still be written to


class WindowCache:
    """What a dashboard process keeps between requests: the finished part of each range's
    window (rebuilt once a minute, or once an hour), so a request reads and adds up only the
    last two minutes."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[object, object]] = {}
        self._lock = threading.Lock()

    def get(self, slot: str, key: object, build: Callable[[], object]) -> object:
        with self._lock:
            found = self._entries.get(slot)
        if found is not None and found[0] == key:
            return found[1]
        value = build()
        with self._lock:
            self._entries[slot] = (key, value)
        return value


def read_window(client: Redis, name: str, now_ms: int | None = None,
                cache: WindowCache | None = None) -> Window:
    """The counters of the last hour (per minute), 24 hours or 7 days (per hour)."""
    if name not in RANGES:
        raise ValueError(f"unknown range {name!r}: choose from {', '.join(RANGES)}")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    memo = cache or WindowCache()
    count, minutes = RANGES[name]
    now_minute = now // MINUTE_MS
    fresh = list(range(now_minute - FRESH_MINUTES + 1, now_minute + 1))
    fresh_counts, fresh_latency = _read_minutes(client, fresh)
    if minutes == 1:
        first = now_minute - count + 1
        minute_ids = list(range(first, first + count))

        def build_minutes() -> Window:
            stable = minute_ids[:-FRESH_MINUTES]
            counts, latency = _read_minutes(client, stable)
            buckets = [Bucket(m * MINUTE_MS, c) for m, c in zip(stable, counts, strict=True)]
            buckets += [Bucket(m * MINUTE_MS, {}) for m in fresh]
            return Window(name, MINUTE_MS, buckets, _sum(latency))

        base = memo.get(name, first, build_minutes)
        assert isinstance(base, Window)
        return base.extended({count - FRESH_MINUTES + i: (c, lat) for i, (c, lat) in
                              enumerate(zip(fresh_counts, fresh_latency, strict=True))})
    this_hour = now // HOUR_MS
    hours = list(range(this_hour - count + 1, this_hour + 1))

    def build_hours() -> Window:
        hour_counts, hour_latency = _read_hours(client, hours[:-1], now)
        buckets = [Bucket(h * HOUR_MS, c) for h, c in zip(hours, hour_counts, strict=False)]
        buckets.append(Bucket(this_hour * HOUR_MS, {}))
        return Window(name, HOUR_MS, buckets, _sum(hour_latency))

    def build_this_hour() -> tuple[dict[str, int], dict[str, float]]:
        settled = [m for m in range(this_hour * 60, now_minute + 1) if m not in fresh]
        counts, latency = _read_minutes(client, settled)
        return {k: int(v) for k, v in _sum(counts).items()}, _sum(latency)

    base = memo.get(name, this_hour, build_hours)
    so_far = memo.get(f"hour-so-far:{name}", now_minute, build_this_hour)
    assert isinstance(base, Window) and isinstance(so_far, tuple)
    counts: Counter[str] = Counter(so_far[0])
    latency = dict(so_far[1])
    for m, c, lat in zip(fresh, fresh_counts, fresh_latency, strict=True):
        if m // 60 != this_hour:
            continue  # the hour just ended: its minutes are in ``base`` (made this hour)
        counts.update(c)
        for k, v in lat.items():
            latency[k] = latency.get(k, 0.0) + v
    additions = {count - 1: (dict(counts), latency)}
    return base.extended(additions)


def _sum(hashes: Iterable[Mapping[str, float]]) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for h in hashes:
        for k, v in h.items():
            total[k] += v
    return dict(total)


def _decode_counts(raw: dict[bytes, bytes]) -> dict[str, int]:
    result = {}
    for k, v in raw.items():
        try:
            result[k.decode()] = int(v)
        except ValueError:
            result[k.decode()] = int(float(v))
    result.pop(_ROLLED, None)
    return result


def _decode_floats(raw: dict[bytes, bytes]) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in raw.items() if k != _ROLLED.encode()}


def _read_minutes(client: Redis, minutes: Sequence[int]
                  ) -> tuple[list[dict[str, int]], list[dict[str, float]]]:
    pipe = client.pipeline(transaction=False)
    for m in minutes:
        pipe.hgetall(keys.counters(m))
    for m in minutes:
        pipe.hgetall(keys.latency(m))
    raw = pipe.execute()
    n = len(minutes)
    return ([_decode_counts(r) for r in raw[:n]], [_decode_floats(r) for r in raw[n:]])


def _read_hours(client: Redis, hours: Sequence[int], now_ms: int
                ) -> tuple[list[dict[str, int]], list[dict[str, float]]]:
    """Each hour's totals: the kept roll-up, else added up now (and kept once the hour is over)."""
    pipe = client.pipeline(transaction=False)
    for h in hours:
        pipe.hgetall(keys.counters_hour(h))
    for h in hours:
        pipe.hgetall(keys.latency_hour(h))
    raw = pipe.execute()
    n = len(hours)
    counts = [_decode_counts(r) for r in raw[:n]]
    latency = [_decode_floats(r) for r in raw[n:]]
    for i, h in enumerate(hours):
        if raw[i] and raw[n + i]:
            continue  # rolled up already (an empty hour keeps just the marker)
        minute_counts, minute_latency = _read_minutes(client, range(h * 60, h * 60 + 60))
        counts[i] = {k: int(v) for k, v in _sum(minute_counts).items()}
        latency[i] = _sum(minute_latency)
        if (h + 1) * HOUR_MS + ROLLUP_AFTER_MS <= now_ms:
            _keep_rollup(client, h, counts[i], latency[i])
    return counts, latency


def _keep_rollup(client: Redis, hour: int, counts: dict[str, int],
                 latency: dict[str, float]) -> None:
    pipe = client.pipeline(transaction=False)
    for key, values in ((keys.counters_hour(hour), counts), (keys.latency_hour(hour), latency)):
        pipe.hset(key, mapping={_ROLLED: 1, **values})
        pipe.expire(key, COUNTER_TTL_S)
    pipe.execute()


def roll_up_past_hours(client: Redis, hours: int = 168, now_ms: int | None = None) -> int:
    """Add up every finished hour of the last ``hours`` not yet rolled up; how many were.

    The dashboard runs this in the background so that no page waits for it."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    last = (now - ROLLUP_AFTER_MS) // HOUR_MS - 1
    wanted = list(range(last - hours + 1, last + 1))
    pipe = client.pipeline(transaction=False)
    for h in wanted:
        pipe.exists(keys.counters_hour(h), keys.latency_hour(h))
    missing = [h for h, n in zip(wanted, pipe.execute(), strict=True) if n < 2]
    for h in missing:
        _read_hours(client, [h], now)
    return len(missing)


# -- what the relay counts for the dashboard ----------------------------------------------------
def match_key_counts(items: Iterable[tuple[str, str, Callable[[str], bool]]]) -> Counter[str]:
    """Counters ``mk.<key>:<pixel>:<event_name>`` for delivered events.

    ``items`` holds (pixel, event_name, has) where ``has(key)`` says whether the event carried
    that user_data key: only presence is counted, never a value."""
    counts: Counter[str] = Counter()
    for pixel, event_name, has in items:
        for key in MATCH_KEYS:
            if has(key):
                counts[f"mk.{key}:{pixel}:{event_name}"] += 1
    return counts
