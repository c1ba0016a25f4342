"""Per-pixel health: is the token valid and the Graph API reachable? Checked once a minute by
one worker (elected with a Redis key), kept in Redis for the dashboard and ``/readyz``. Each
answer is also the breaker's (``relay.breaker``): a 190 pauses the pixel, a success ends a
pause for its token."""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec
from redis import Redis

from relay import keys
from relay.breaker import Breaker
from relay.config import PixelSettings
from relay.meta_client import MetaClient

ELECTION_KEY = f"{keys.PREFIX}:health:leader"
# A check that could not reach Meta is repeated this soon instead of after a whole interval, so
# a Graph API that was still starting (or a network blip) is not reported as down for a minute.
RECHECK_UNREACHABLE_S = 5


class PixelHealth:
    def __init__(self, client: Redis, meta: MetaClient, breaker: Breaker | None = None) -> None:
        self._client = client
        self._meta = meta
        self._breaker = breaker

    def check_if_due(self, pixels: Sequence[PixelSettings], interval_s: float) -> bool:
        """Check every pixel unless another worker did within ``interval_s``."""
        if not self._client.set(ELECTION_KEY, "1", nx=True, ex=max(1, int(interval_s))):
            return False
        statuses = [self.check(pixel) for pixel in pixels]
        if any(_unreachable(status) for status in statuses):
            self._client.expire(ELECTION_KEY, RECHECK_UNREACHABLE_S)
        return True

    def check(self, pixel: PixelSettings) -> dict[str, object]:
        started = time.perf_counter()
        error = self._meta.check_pixel(pixel)
        status: dict[str, object] = {
            "ok": error is None,
            "checked_ms": int(time.time() * 1000),
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "error": None if error is None else error.as_dict(),
        }
        self._client.set(keys.pixel_health(pixel.id), msgspec.json.encode(status),
                         ex=3600)
        if self._breaker is not None:
            self._breaker.checked(pixel.id, error, pixel.access_token)
        return status

    def status(self, pixel_id: str) -> dict[str, object] | None:
        raw = self._client.get(keys.pixel_health(pixel_id))
        return msgspec.json.decode(raw) if raw else None


def _unreachable(status: dict[str, object]) -> bool:
    error = status.get("error")
    return isinstance(error, dict) and error.get("kind") == "TransientError"
