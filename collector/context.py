"""Everything the collector's handlers share, built once from the settings at start-up."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import msgspec

from collector.enqueue import DurableEnqueuer
from collector.metrics import CollectorMetrics
from collector.spool import Spool
from collector.visitor import BotDetector, TrustedProxies
from collector.withheld import WithheldCounter, redis_adder
from relay.clicks import encode_click
from relay.config import ApiKeySettings, LinkSettings, PixelSettings, Settings, hash_api_key
from relay.consent import Withheld, with_pixel_defaults, withheld_reason
from relay.errors import InputError
from relay.events import ClickContext, Envelope, MetaEvent, pack_envelope
from relay.inbox import ClickWrite, EventWrite
from relay.queues import queue_for

SECONDS_PER_DAY = 86_400


@dataclass
class CollectorContext:
    """The settings, the durable enqueuer and the metrics, plus what is derived from them once.

    ``redis`` (the client the enqueuer writes through) and ``spool`` are the worker's own; the
    app reads the pixels' health through the one and readiness from the other.
    """

    settings: Settings
    enqueuer: DurableEnqueuer
    metrics: CollectorMetrics
    redis: Any = None
    spool: Spool | None = None
    proxies: TrustedProxies = field(init=False)
    bots: BotDetector = field(init=False)
    links: dict[str, LinkSettings] = field(init=False)
    pixel_ids: frozenset[str] = field(init=False)
    pixels: dict[str, PixelSettings] = field(init=False)
    origins: frozenset[str] = field(init=False)
    withheld: WithheldCounter = field(init=False)

    def __post_init__(self) -> None:
        self.withheld = WithheldCounter(
            self.metrics.withheld, redis_adder(self.redis) if self.redis is not None else None)
        # Built into the server at start (Litestar's CORS), so kept until a restart
        # (collector.reload.RESTART_ONLY).
        self.origins = frozenset(o.rstrip("/") for o in self.settings.collector.allowed_origins)
        self.reconfigure(self.settings)
        # prometheus' labels() checks the labels and takes a lock on every call; a child never
        # changes, so the hot path fetches each once, on first use (a series still appears in
        # /metrics only once it has been counted).
        self.requests_counter = cache(self.metrics.requests.labels)
        self.events_counter = cache(self.metrics.events.labels)

    def reconfigure(self, settings: Settings) -> None:
        """Serve ``settings`` from the next request on: links, pixels, API keys and what is
        derived from them. Everything is computed first and assigned without an ``await`` in
        between, so a request sees the old configuration or the new one, not a mix of them."""
        c = settings.collector
        proxies = TrustedProxies.parse(c.trusted_proxies)
        bots = BotDetector(c.extra_bot_user_agents)
        links = {link.slug: link for link in settings.links}
        pixels = {p.id: p for p in settings.pixels}
        self.settings = settings
        self.proxies, self.bots, self.links = proxies, bots, links
        self.pixels, self.pixel_ids = pixels, frozenset(pixels)
        self.click_ttl_s = c.click_ttl_days * SECONDS_PER_DAY
        self.cookie_max_age_s = c.cookie_max_age_days * SECONDS_PER_DAY
        # A redirect's events leave the click's fbc, fbp, IP and user agent to its click context
        # (the relay fills them in from it, relay.events.enrich_from_click) when the context
        # outlives every event that can still be sent: then they are not stored twice.
        self.events_refer_to_click = c.click_ttl_days >= settings.relay.max_event_age_days

    def authenticate(self, authorization: str | None) -> ApiKeySettings:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InputError("send the API key as 'Authorization: Bearer <key>'", 401)
        return self.key_for_token(token.strip())

    def key_for_token(self, token: str) -> ApiKeySettings:
        """The API key whose hash matches ``token`` (compared in constant time), else 401."""
        digest = hash_api_key(token)
        for key in self.settings.api_keys:
            if hmac.compare_digest(key.sha256, digest):
                return key
        raise InputError("the API key is not valid", 401)

    def may_send(self, pixel_id: str, event_name: str, consent: bool | None,
                 link: LinkSettings | None = None) -> bool:
        """Whether the event may go to ``pixel_id`` (``relay.consent``); counts it if not."""
        return self.withhold(pixel_id, event_name, consent, link) is None

    def withhold(self, pixel_id: str, event_name: str, consent: bool | None,
                 link: LinkSettings | None = None) -> Withheld | None:
        """Why the event must not go to ``pixel_id`` (counted), or ``None`` when it may."""
        pixel = self.pixels.get(pixel_id)
        required = (pixel is not None and pixel.require_consent) or (
            link is not None and link.require_consent)
        reason = withheld_reason(consent, required=required)
        if reason is not None:
            self.withheld.count(pixel_id, event_name, reason)
        return reason

    def event_write(self, pixel_id: str, event: MetaEvent, *, source: str,
                    click_id: str | None, received_ms: int,
                    test_event_code: str | None = None) -> EventWrite:
        """The write storing ``event`` for ``pixel_id``, with the pixel's LDU default."""
        event = with_pixel_defaults(event, self.pixels.get(pixel_id))
        envelope = Envelope(pixel_id=pixel_id, event=event, received_ms=received_ms,
                            source=source,  # type: ignore[arg-type]
                            click_id=click_id, test_event_code=test_event_code)
        return EventWrite(
            queue=queue_for(event.event_name, self.settings.relay),
            pixel_id=pixel_id,
            dedup_key=envelope.dedup_key,
            received_ms=received_ms,
            payload=pack_envelope(envelope),
        )

    def click_write(self, click: ClickContext) -> ClickWrite:
        return ClickWrite(click_id=click.click_id, ttl_s=self.click_ttl_s,
                          payload=encode_click(click))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


json_encode = msgspec.json.encode
