"""Settings of the fake Meta Graph API, read once into a frozen ``FakeMetaOptions``.

Built directly (``FakeMetaOptions(port=9000)``) by tests and the ``pixelrelay fake-meta``
command, or from ``FAKEMETA_*`` environment variables by ``python -m fakemeta``. A bad value
fails at start-up with one sentence naming the field or the variable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

# field name -> environment variable; docs/fake-meta.md documents every one of them.
ENV_VARS: dict[str, str] = {
    "host": "FAKEMETA_HOST",
    "port": "FAKEMETA_PORT",
    "tokens": "FAKEMETA_TOKENS",
    "app_secrets": "FAKEMETA_APP_SECRETS",
    "latency_ms": "FAKEMETA_LATENCY_MS",
    "latency_jitter_ms": "FAKEMETA_LATENCY_JITTER_MS",
    "error_rates": "FAKEMETA_ERROR_RATES",
    "http_500_rate": "FAKEMETA_HTTP_500_RATE",
    "throttle_events_per_s": "FAKEMETA_THROTTLE_EVENTS_PER_S",
    "outage_windows": "FAKEMETA_OUTAGES",
    "seed": "FAKEMETA_SEED",
    "max_events_kept": "FAKEMETA_MAX_EVENTS_KEPT",
}


@dataclass(frozen=True)
class FakeMetaOptions:
    """How the fake behaves: where it listens, which tokens it takes, which faults it injects."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8090
    """TCP port to listen on."""
    # Secrets stay out of repr(), so logging the options cannot leak them.
    tokens: frozenset[str] = field(default=frozenset(), repr=False)
    """Valid access tokens; empty means any non-empty token except the string "invalid"."""
    app_secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Access token -> app secret; a token listed here must come with a valid appsecret_proof."""
    latency_ms: int = 0
    """Delay added to every Graph request, in milliseconds."""
    latency_jitter_ms: int = 0
    """Random +/- spread around latency_ms, in milliseconds (never below zero)."""
    error_rates: Mapping[int, float] = field(default_factory=dict)
    """Meta error code -> probability (0..1) that an events request fails with it."""
    http_500_rate: float = 0.0
    """Probability (0..1) that an events request fails with HTTP 500."""
    throttle_events_per_s: float = 0.0
    """Per-pixel events budget per second (token bucket); 0 turns throttling off."""
    outage_windows: Sequence[tuple[float, float]] = ()
    """(start_s, end_s) after server start during which every request gets HTTP 503."""
    seed: int | None = None
    """Seed for the fault and latency dice, for reproducible runs; None draws fresh ones."""
    max_events_kept: int = 100_000
    """Per pixel, how many accepted event bodies (and event ids) to keep for inspection."""

    def __post_init__(self) -> None:
        check_port(self.port, "port")
        check_non_negative_int(self.latency_ms, "latency_ms")
        check_non_negative_int(self.latency_jitter_ms, "latency_jitter_ms")
        check_error_rates(self.error_rates, "error_rates")
        check_probability(self.http_500_rate, "http_500_rate")
        check_rate_total(self.error_rates, self.http_500_rate, "error_rates + http_500_rate")
        check_non_negative_float(self.throttle_events_per_s, "throttle_events_per_s")
        check_outage_windows(self.outage_windows, "outage_windows")
        check_positive_int(self.max_events_kept, "max_events_kept")
        # Private copies, so a caller mutating its dict or list cannot change a running fake.
        object.__setattr__(self, "tokens", frozenset(self.tokens))
        object.__setattr__(self, "app_secrets", dict(self.app_secrets))
        object.__setattr__(self, "error_rates", dict(self.error_rates))
        object.__setattr__(self, "outage_windows", tuple(tuple(w) for w in self.outage_windows))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FakeMetaOptions:
        """Options from ``FAKEMETA_*`` variables; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, variable in ENV_VARS.items():
            raw = env.get(variable, "").strip()
            if raw:
                values[name] = _ENV_PARSERS[name](raw, variable)
        check_rate_total(
            values.get("error_rates", {}),
            values.get("http_500_rate", 0.0),
            "FAKEMETA_ERROR_RATES + FAKEMETA_HTTP_500_RATE",
        )
        return cls(**values)


# --- checks shared by the constructor, from_env and the runtime /_fake/faults endpoint ---


def check_port(value: int, name: str) -> None:
    if not _is_int(value) or not 1 <= value <= 65535:
        raise ValueError(f"{name} must be a TCP port between 1 and 65535, got {value!r}.")


def check_non_negative_int(value: int, name: str) -> None:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}.")


def check_positive_int(value: int, name: str) -> None:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")


def check_non_negative_float(value: float, name: str) -> None:
    if not _is_number(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}.")


def check_probability(value: float, name: str) -> None:
    if not _is_number(value) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability between 0 and 1, got {value!r}.")


def check_error_rates(rates: Mapping[int, float], name: str) -> None:
    for code, rate in rates.items():
        if not _is_int(code) or code <= 0:
            raise ValueError(f"{name} keys must be positive Meta error codes, got {code!r}.")
        check_probability(rate, f"{name}[{code}]")


def check_rate_total(rates: Mapping[int, float], http_500_rate: float, name: str) -> None:
    # One die decides every request, so the probabilities must fit in one.
    if sum(rates.values()) + http_500_rate > 1 + 1e-9:
        raise ValueError(f"{name} must add up to at most 1 (one draw decides each request).")


def check_outage_windows(windows: Sequence[tuple[float, float]], name: str) -> None:
    for window in windows:
        pair = isinstance(window, Sequence) and len(window) == 2
        if not pair or not all(_is_number(x) for x in window):
            raise ValueError(f"{name} entries must be (start_s, end_s) pairs, got {window!r}.")
        start, end = window
        if not 0 <= start < end:
            raise ValueError(f"{name} entries need 0 <= start_s < end_s, got {window!r}.")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]


# --- FAKEMETA_* parsers: each returns the typed value or raises naming the variable ---


def _parse_str(raw: str, variable: str) -> str:
    return raw


def _parse_with(
    convert: Callable[[str], T], check: Callable[[T, str], None], expect: str
) -> Callable[[str, str], T]:
    def parse(raw: str, variable: str) -> T:
        try:
            value = convert(raw)
        except ValueError:
            raise ValueError(f"{variable} must be {expect}, got {raw!r}.") from None
        check(value, variable)
        return value

    return parse


def _parse_tokens(raw: str, variable: str) -> frozenset[str]:
    return frozenset(token.strip() for token in raw.split(",") if token.strip())


def _parse_app_secrets(raw: str, variable: str) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for item in raw.split(","):
        token, sep, secret = item.strip().partition(":")
        if not sep or not token or not secret:
            # The value holds secrets: say what is wrong without echoing it.
            raise ValueError(f"{variable} must look like 'token:secret,token2:secret2'.")
        secrets[token] = secret
    return secrets


def _parse_error_rates(raw: str, variable: str) -> dict[int, float]:
    rates: dict[int, float] = {}
    try:
        for item in raw.split(","):
            code, sep, rate = item.strip().partition(":")
            if not sep:
                raise ValueError(item)
            rates[int(code)] = float(rate)
    except ValueError:
        raise ValueError(
            f"{variable} must look like '2:0.1,613:0.05' (code:probability), got {raw!r}."
        ) from None
    check_error_rates(rates, variable)
    return rates


def _parse_outages(raw: str, variable: str) -> tuple[tuple[float, float], ...]:
    windows: list[tuple[float, float]] = []
    try:
        for item in raw.split(","):
            start, sep, end = item.strip().partition("-")
            if not sep:
                raise ValueError(item)
            windows.append((float(start), float(end)))
    except ValueError:
        raise ValueError(
            f"{variable} must look like '5-10,30-35' (start_s-end_s after start), got {raw!r}."
        ) from None
    check_outage_windows(windows, variable)
    return tuple(windows)


_ENV_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "host": _parse_str,
    "port": _parse_with(int, check_port, "a TCP port between 1 and 65535"),
    "tokens": _parse_tokens,
    "app_secrets": _parse_app_secrets,
    "latency_ms": _parse_with(int, check_non_negative_int, "a whole number of milliseconds"),
    "latency_jitter_ms": _parse_with(int, check_non_negative_int, "a whole number of milliseconds"),
    "error_rates": _parse_error_rates,
    "http_500_rate": _parse_with(float, check_probability, "a probability between 0 and 1"),
    "throttle_events_per_s": _parse_with(
        float, check_non_negative_float, "a number of events per second"
    ),
    "outage_windows": _parse_outages,
    "seed": _parse_with(int, lambda value, name: None, "a whole number"),
    "max_events_kept": _parse_with(int, check_positive_int, "a whole number >= 1"),
}
