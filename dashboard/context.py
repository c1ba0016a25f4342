"""What every handler needs: the settings, Redis, the relay's readers, the bulk-job runner."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis import Redis

from dashboard.jobs import JobRunner
from relay.config import Settings
from relay.deadletters import DeadLetters
from relay.ledger import Ledger
from relay.stats import WindowCache

SECONDS_PER_DAY = 86_400
COLLECTOR_CACHE_S = 2.0


@dataclass
class Context:
    settings: Settings
    client: Redis
    dead: DeadLetters = field(init=False)
    ledger: Ledger = field(init=False)
    jobs: JobRunner = field(init=False)
    windows: WindowCache = field(default_factory=WindowCache)
    # one client for the collector's /metrics: made once (a new one per call costs an SSL
    # context, ~15 ms); its transport is the I/O edge tests swap
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=0.3))
    _collector: tuple[float, dict[str, float] | None] = (0.0, None)

    def __post_init__(self) -> None:
        ttl_s = self.settings.relay.ledger_ttl_days * SECONDS_PER_DAY
        self.dead = DeadLetters(self.client, ttl_s)
        self.ledger = Ledger(self.client, ttl_s)
        self.jobs = JobRunner(self.client, self.settings)

    def collector_metrics(self) -> dict[str, float] | None:
        """A few figures from the collector's /metrics (spooling, bots, refused), cached for 2 s;
        None when the collector does not answer within 300 ms."""
        at, cached = self._collector
        if time.monotonic() - at < COLLECTOR_CACHE_S:
            return cached
        result: dict[str, float] | None
        try:
            text = self.http.get(f"{self.settings.collector_url}/metrics").text
            result = _parse_metrics(text)
        except httpx.HTTPError:
            result = None
        self._collector = (time.monotonic(), result)
        return result


def _parse_metrics(text: str) -> dict[str, float]:
    found: dict[str, float] = {"spooling": 0.0, "bots": 0.0, "refused": 0.0,
                               "spool_pending_bytes": 0.0}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        try:
            number = float(value)
        except ValueError:
            continue
        if name.startswith("pixelrelay_collector_spooling"):
            found["spooling"] = max(found["spooling"], number)
        elif name.startswith("pixelrelay_collector_spool_pending_bytes"):
            found["spool_pending_bytes"] += number
        elif name.startswith("pixelrelay_collector_bot_clicks_total"):
            found["bots"] += number
        elif name.startswith("pixelrelay_collector_requests_total") and 'status="4' in name:
            found["refused"] += number
    return found


def operator_of(scope: Any) -> Any:
    return scope.get("operator")
