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
    """Counters and latency histograms of one time window, bucketed for charts."""

    name: str
    bucket_ms: int
    buckets: list[Bucket]
    latency: dict[str, float] = field(default_factory=dict)  # histogram fields, added up

    def total(self, what: str, pixel: str | None = None, event_name: str | None = None) -> int:
        return sum(n for b in self.buckets for f, n in b.counts.items()
                   if _matches(f, what, pixel, event_name))

    def series(self, what: str, pixel: str | None = None, event_name: str | None = None
               ) -> list[int]:
        return [sum(n for f, n in b.counts.items() if _matches(f, what, pixel, event_name))
                for b in self.buckets]

    def by(self, what: str, part: Literal["pixel", "event_name"]) -> dict[str, int]:
        """Totals of ``what`` per pixel or per event name."""
        result: Counter[str] = Counter()
        index = 1 if part == "pixel" else 2
        for b in self.buckets:
            for f, n in b.counts.items():
                pieces = f.split(":", 2)
                if len(pieces) == 3 and pieces[0] == what:
                    result[pieces[index]] += n
        return dict(result)

    def names(self, part: Literal["pixel", "event_name"],
              what: Iterable[str] | None = None) -> list[str]:
        """Pixels or event names seen in the window (in the counters named by ``what``)."""
        index = 1 if part == "pixel" else 2
        wanted = None if what is None else set(what)
        found = set()
        for b in self.buckets:
            for f in b.counts:
                pieces = f.split(":", 2)
                if len(pieces) == 3 and (wanted is None or pieces[0] in wanted):
                    found.add(pieces[index])
        return sorted(found)

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


def _matches(f: str, what: str, pixel: str | None, event_name: str | None) -> bool:
    pieces = f.split(":", 2)
    return (len(pieces) == 3 and pieces[0] == what and (pixel is None or pieces[1] == pixel)
            and (event_name is None or pieces[2] == event_name))


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
def read_window(client: Redis, name: str, now_ms: int | None = None) -> Window:
    """The counters of the last hour (per minute), 24 hours or 7 days (per hour)."""
    if name not in RANGES:
        raise ValueError(f"unknown range {name!r}: choose from {', '.join(RANGES)}")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    count, minutes = RANGES[name]
    if minutes == 1:
        first = now // MINUTE_MS - count + 1
        minute_ids = list(range(first, first + count))
        counts, latency = _read_minutes(client, minute_ids)
        buckets = [Bucket(m * MINUTE_MS, c) for m, c in zip(minute_ids, counts, strict=True)]
        return Window(name, MINUTE_MS, buckets, _sum(latency))
    this_hour = now // HOUR_MS
    hours = list(range(this_hour - count + 1, this_hour + 1))
    hour_counts, hour_latency = _read_hours(client, hours, now)
    buckets = [Bucket(h * HOUR_MS, c) for h, c in zip(hours, hour_counts, strict=True)]
    return Window(name, HOUR_MS, buckets, _sum(hour_latency))


def _sum(hashes: Iterable[Mapping[str, float]]) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for h in hashes:
        for k, v in h.items():
            total[k] += v
    return dict(total)


def _decode_counts(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {k.decode(): int(float(v)) for k, v in raw.items() if k != _ROLLED.encode()}


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
