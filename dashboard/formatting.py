"""Jinja filters: numbers, shares, durations and times the way an operator reads them."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

NONE = "\u2013"  # an en dash: no value


def number(value: Any) -> str:
    return NONE if value is None else f"{int(value):,}"


def percent(value: float | None, digits: int = 1) -> str:
    return NONE if value is None else f"{value * 100:.{digits}f} %"


def duration_ms(value: float | None) -> str:
    if value is None:
        return NONE
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.1f} s"
    if value < 3_600_000:
        return f"{value / 60_000:.1f} min"
    return f"{value / 3_600_000:.1f} h"


def ago(ms: int | None) -> str:
    if not ms:
        return "never"
    return f"{duration_ms(max(0, time.time() * 1000 - ms))} ago"


def when(ms: int | float | None) -> str:
    if not ms:
        return NONE
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def install_filters(engine: Any) -> None:
    env = engine.engine
    env.filters.update(number=number, percent=percent, duration_ms=duration_ms, ago=ago,
                       when=when)
