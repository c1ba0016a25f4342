"""Injected misbehaviour: latency, random errors, outage windows and per-pixel throttling.

Starts from ``FakeMetaOptions`` and can be changed while running through ``POST /_fake/faults``
(a ``FaultOverride``), so a load test can break Meta mid-run. One seeded die decides the
errors and another the latency, so a seeded run injects the same sequence of faults.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from fakemeta._errors import MetaError, injected_error, server_error
from fakemeta._options import (
    FakeMetaOptions,
    check_error_rates,
    check_non_negative_float,
    check_non_negative_int,
    check_probability,
    check_rate_total,
)


class FaultOverride(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_fake/faults``: every field optional, unknown ones refused."""

    latency_ms: int | msgspec.UnsetType = msgspec.UNSET
    latency_jitter_ms: int | msgspec.UnsetType = msgspec.UNSET
    error_rates: dict[int, float] | msgspec.UnsetType = msgspec.UNSET
    http_500_rate: float | msgspec.UnsetType = msgspec.UNSET
    throttle_events_per_s: float | msgspec.UnsetType = msgspec.UNSET
    outage_s: float | msgspec.UnsetType = msgspec.UNSET
    """Start an outage now lasting this many seconds; 0 ends every outage window."""
    revoked_tokens: list[str] | msgspec.UnsetType = msgspec.UNSET
    """Tokens refused with code 190 from now on, as if revoked at Meta; [] restores them."""
    error_pixels: list[str] | msgspec.UnsetType = msgspec.UNSET
    """Pixels ``error_rates`` and ``http_500_rate`` apply to from now on; [] means every pixel."""


@dataclass
class _Bucket:
    tokens: float
    updated_at: float


class Faults:
    """The current fault settings and the dice, clock and buckets that apply them."""

    def __init__(self, options: FakeMetaOptions, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._started_at = clock()
        self.latency_ms = options.latency_ms
        self.latency_jitter_ms = options.latency_jitter_ms
        self.error_rates: dict[int, float] = dict(options.error_rates)
        self.http_500_rate = options.http_500_rate
        self.throttle_events_per_s = options.throttle_events_per_s
        self.outage_windows: list[tuple[float, float]] = list(options.outage_windows)
        seed = options.seed
        self._error_dice = random.Random(seed)
        self._latency_dice = random.Random(None if seed is None else seed + 1)
        self._buckets: dict[str, _Bucket] = {}
        self.revoked_tokens: frozenset[str] = frozenset()
        self.error_pixels: frozenset[str] = frozenset()  # empty: errors hit every pixel

    def uptime_s(self) -> float:
        """Seconds since the fake started; outage windows are measured on this scale."""
        return self._clock() - self._started_at

    def latency_s(self) -> float:
        """How long to hold the next Graph request, in seconds."""
        delay_ms = float(self.latency_ms)
        if self.latency_jitter_ms:
            jitter = self.latency_jitter_ms
            delay_ms += self._latency_dice.uniform(-jitter, jitter)
        return max(delay_ms, 0.0) / 1000

    def in_outage(self) -> bool:
        """Whether now falls inside an outage window."""
        now = self.uptime_s()
        return any(start <= now < end for start, end in self.outage_windows)

    def draw_error(self, pixel_id: str | None = None) -> MetaError | None:
        """The injected error for this events request, if the die says so."""
        if not self.http_500_rate and not any(self.error_rates.values()):
            return None
        if self.error_pixels and pixel_id not in self.error_pixels:
            return None
        roll = self._error_dice.random()
        threshold = self.http_500_rate
        if roll < threshold:
            return server_error()
        for code, rate in self.error_rates.items():
            threshold += rate
            if roll < threshold:
                return injected_error(code)
        return None

    def take_budget(self, pixel_id: str, events: int) -> bool:
        """Spend ``events`` from the pixel's token bucket; False means throttled.

        The bucket holds one second of budget. A batch larger than that passes when the
        bucket is full and leaves it in debt, so the long-run rate still holds.
        """
        rate = self.throttle_events_per_s
        if not rate:
            return True
        capacity = max(rate, 1.0)
        now = self._clock()
        bucket = self._buckets.get(pixel_id)
        if bucket is None:
            bucket = self._buckets[pixel_id] = _Bucket(tokens=capacity, updated_at=now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated_at) * rate)
        bucket.updated_at = now
        if bucket.tokens < min(events, capacity):
            return False
        bucket.tokens -= events
        return True

    def reset_throttle(self) -> None:
        """Refill every pixel's bucket."""
        self._buckets.clear()

    def apply(self, override: FaultOverride) -> None:
        """Change the settings named in ``override``; raises ValueError and changes nothing
        if any value is out of range."""
        unset = msgspec.UNSET
        latency_ms = self.latency_ms if override.latency_ms is unset else override.latency_ms
        jitter_ms = (
            self.latency_jitter_ms
            if override.latency_jitter_ms is unset
            else override.latency_jitter_ms
        )
        error_rates = self.error_rates if override.error_rates is unset else override.error_rates
        http_500_rate = (
            self.http_500_rate if override.http_500_rate is unset else override.http_500_rate
        )
        throttle = (
            self.throttle_events_per_s
            if override.throttle_events_per_s is unset
            else override.throttle_events_per_s
        )
        check_non_negative_int(latency_ms, "latency_ms")
        check_non_negative_int(jitter_ms, "latency_jitter_ms")
        check_error_rates(error_rates, "error_rates")
        check_probability(http_500_rate, "http_500_rate")
        check_rate_total(error_rates, http_500_rate, "error_rates + http_500_rate")
        check_non_negative_float(throttle, "throttle_events_per_s")
        if override.outage_s is not unset:
            check_non_negative_float(override.outage_s, "outage_s")

        self.latency_ms = latency_ms
        self.latency_jitter_ms = jitter_ms
        self.error_rates = dict(error_rates)
        self.http_500_rate = http_500_rate
        self.throttle_events_per_s = throttle
        if override.revoked_tokens is not unset:
            self.revoked_tokens = frozenset(override.revoked_tokens)
        if override.error_pixels is not unset:
            self.error_pixels = frozenset(override.error_pixels)
        if override.outage_s is not unset:
            if override.outage_s == 0:
                self.outage_windows.clear()
            else:
                now = self.uptime_s()
                self.outage_windows.append((now, now + override.outage_s))

    def snapshot(self) -> dict[str, Any]:
        """The current settings, for ``/_fake/faults``."""
        return {
            "latency_ms": self.latency_ms,
            "latency_jitter_ms": self.latency_jitter_ms,
            "error_rates": {str(code): rate for code, rate in self.error_rates.items()},
            "http_500_rate": self.http_500_rate,
            "throttle_events_per_s": self.throttle_events_per_s,
            "outage_windows": [list(window) for window in self.outage_windows],
            "outage_active": self.in_outage(),
            "revoked_tokens": len(self.revoked_tokens),  # how many; tokens are not echoed
            "error_pixels": sorted(self.error_pixels),
            "uptime_s": self.uptime_s(),
        }
