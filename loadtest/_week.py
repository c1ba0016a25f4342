"""A week of traffic written into Redis by the project's own writers (the dashboard benchmark's
fill), so that what the pages read is the layout the real stack writes, not a copy of it.

Minute by minute over ``minutes`` simulated minutes ending now, with a clock the writers are
given: the collector's STORE script (``relay.inbox.store_sync``: inbox, ledger record,
``received`` counter, click contexts), then the relay's ``Deliverer`` against a scripted Meta
(``httpx.MockTransport``): dedup claims, ledger steps and batch logs, counters, latency
histograms, match-key counts, link counts, pixel activity, and dead letters through its own
failure paths (Meta refusing the batch, retries exhausted, expired events); a retried batch
now and then, a duplicate every minute, and the collector's consent counter
(``collector.withheld``). The inbox is emptied after each minute, as the relay's batcher does.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from collector.withheld import WithheldCounter, redis_adder
from relay import keys
from relay.clicks import encode_click, new_click_id
from relay.config import Settings
from relay.delivery import Attempt, Deliverer
from relay.errors import TransientError
from relay.events import ClickContext, Envelope, MetaEvent, UserData, pack_envelope
from relay.inbox import ClickWrite, EventWrite, Write, store_sync
from relay.meta_client import MetaClient
from relay.queues import QUEUE_NAMES, queue_for

PIXELS = ("1234567890", "2234567890")
EVENTS = ("PageView", "ViewContent", "AddToCart", "Lead", "Purchase", "CompleteRegistration")
LINK = "demo"
MINUTE_MS = 60_000
DAY_S = 86_400
# What Meta answers a dead batch, by reason (kind:code as the dead-letter page counts them);
# refusals that pause the pixel instead (token 190, permission 200) are bench_outage's.
REFUSALS: dict[str, tuple[int, dict[str, Any]]] = {
    "rejected:100": (400, {"message": "Invalid parameter", "type": "OAuthException",
                           "code": 100}),
    "rejected:3": (400, {"message": "Application does not have the capability to make this "
                         "API call.", "type": "OAuthException", "code": 3}),
    "retries_exhausted:2": (503, {"message": "Service temporarily unavailable",
                                  "type": "OAuthException", "code": 2, "is_transient": True}),
}
DEAD_REASONS = (*REFUSALS, "expired:none")


def hashed(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class _Clock:
    def __init__(self) -> None:
        self.ms = 0

    def seconds(self) -> float:
        return self.ms / 1000

    def millis(self) -> int:
        return self.ms


class _ScriptedMeta:
    """Meta behind ``httpx.MockTransport``: accepts, unless told what to answer next."""

    def __init__(self) -> None:
        self.refusal: tuple[int, dict[str, Any]] | None = None
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        trace = f"T{self.requests:08d}"
        if self.refusal is not None:
            status, error = self.refusal
            return httpx.Response(status, json={"error": {**error, "fbtrace_id": trace}})
        sent = len(msgspec.json.decode(request.content)["data"])
        return httpx.Response(200, json={"events_received": sent, "fbtrace_id": trace})


class _NoPrometheus:
    def labels(self, *_: str) -> _NoPrometheus:
        return self

    def inc(self) -> None: ...


@dataclass
class Filled:
    events: int = 0  # ledger records (every event stored once)
    delivered_batches: int = 0
    dead: int = 0
    duplicates: int = 0
    retried_batches: int = 0
    withheld: int = 0
    recent_clicks: list[str] = field(default_factory=list)  # the last minute's click ids
    sample_click: str = ""  # a click with a conversion (what the benchmark finds)


def week_settings(settings: Settings) -> Settings:
    """The relay settings the fill runs with: no rate limit and no breaker pause to get in the
    way of a week sent in minutes (their own behaviour is measured by bench_relay)."""
    relay = msgspec.structs.replace(settings.relay, requests_per_s=1e9, events_per_s=1e12,
                                    pause_after_failures=1_000_000)
    return msgspec.structs.replace(settings, relay=relay)


def fill_week(client: Any, async_client: Any, settings: Settings, *, minutes: int,
              events: int, dead: int, now_ms: int | None = None,
              progress: Callable[[str], None] = lambda _: None) -> Filled:
    """Write ``events`` events (``dead`` of them dead letters) over ``minutes`` minutes
    ending now, through the collector's and the relay's writers."""
    settings = week_settings(settings)
    clock = _Clock()
    meta = _ScriptedMeta()
    deliverer = Deliverer(settings, client, MetaClient(settings.meta, httpx.MockTransport(meta)),
                          clock=clock.seconds, sleep=lambda _: None)
    withheld = WithheldCounter(_NoPrometheus(), redis_adder(async_client), clock.millis)
    loop = asyncio.new_event_loop()
    ttl_s = settings.relay.ledger_ttl_days * DAY_S
    now = int(time.time() * 1000) if now_ms is None else now_ms
    first = (now // MINUTE_MS - minutes + 1) * MINUTE_MS
    filled = Filled()
    started = time.monotonic()
    try:
        for m in range(minutes):
            start = first + m * MINUTE_MS
            _minute(client, deliverer, meta, clock, withheld, loop, settings, ttl_s, m, start,
                    events - dead, dead, minutes, filled)
            if m % 1440 == 1439:
                progress(f"  day {m // 1440 + 1} written ({time.monotonic() - started:.0f} s, "
                         f"{filled.events:,} events)")
    finally:
        loop.close()
    _empty_inboxes(client)
    return filled


def _share(total: int, parts: int, i: int) -> int:
    """Part ``i`` of ``total`` spread evenly over ``parts`` (the parts add up to ``total``)."""
    return total * (i + 1) // parts - total * i // parts


def _minute(client: Any, deliverer: Deliverer, meta: _ScriptedMeta, clock: _Clock,
            withheld: WithheldCounter, loop: asyncio.AbstractEventLoop, settings: Settings,
            ttl_s: int, m: int, start: int, total: int, dead_total: int, minutes: int,
            filled: Filled) -> None:
    per_minute, dead_per_minute = _share(total, minutes, m), _share(dead_total, minutes, m)
    base, previous = total * m // minutes, total * (m - 1) // minutes  # first event numbers
    by_pixel: dict[str, list[Envelope]] = {p: [] for p in PIXELS}
    clicks: list[ClickWrite] = []
    for i in range(per_minute):
        n = base + i
        pixel, name = PIXELS[n % 2], EVENTS[(n // 2) % len(EVENTS)]
        received = start + (i * 50_000) // per_minute
        click_id = None
        event_id = f"ev-{n}"
        if pixel == PIXELS[0] and name == "PageView":  # a redirect: its event_id is the click's
            click_id = event_id = new_click_id(received)
            clicks.append(ClickWrite(click_id, 8 * DAY_S, encode_click(ClickContext(
                click_id, LINK, received, fbc=f"fb.1.{received}.{click_id}"))))
        elif pixel == PIXELS[0] and name == "Purchase" and filled.recent_clicks:
            click_id = filled.recent_clicks[0]  # converted from a click a minute ago
            if m == minutes // 2:
                filled.sample_click = click_id
        by_pixel[pixel].append(_envelope(pixel, name, event_id, received, n, click_id))
    dead_envs = [_envelope(PIXELS[m % 2], EVENTS[(m + i) % len(EVENTS)], f"dead-{m}-{i}",
                           start + 1_000 + i, m * 7 + i, None)
                 for i in range(dead_per_minute)]
    reason = DEAD_REASONS[m % len(DEAD_REASONS)]
    if reason == "expired:none":
        dead_envs = [msgspec.structs.replace(e, event=msgspec.structs.replace(
            e.event, event_time=e.event.event_time - 8 * DAY_S)) for e in dead_envs]
    if m:
        n = previous + 1  # sent a minute ago: a duplicate now
        again = _envelope(PIXELS[n % 2], EVENTS[(n // 2) % len(EVENTS)], f"ev-{n}",
                          start + 2_000, n, None)
        by_pixel[again.pixel_id].append(again)
    writes: list[Write] = [_write(e, settings) for envs in by_pixel.values() for e in envs]
    writes += [_write(e, settings) for e in dead_envs]
    writes += clicks
    filled.recent_clicks = [c.click_id for c in clicks]
    store_sync(client, writes, ttl_s)
    filled.events += per_minute + len(dead_envs)
    _empty_inboxes(client)

    clock.ms = start + 55_000
    for pixel, envs in by_pixel.items():
        batch = f"w{m}-{pixel[0]}"
        items = [pack_envelope(e) for e in envs]
        if m % 10 == 3 and pixel == PIXELS[0]:  # Meta fails once, the retry gets through
            meta.refusal = REFUSALS["retries_exhausted:2"]
            try:
                deliverer.deliver(pixel, items, Attempt(batch, 1, last=False))
            except TransientError:
                filled.retried_batches += 1
            meta.refusal = None
            clock.ms += 2_000
            deliverer.deliver(pixel, items, Attempt(batch, 2, last=False))
        else:
            deliverer.deliver(pixel, items, Attempt(batch, 1, last=False))
        filled.delivered_batches += 1
    filled.duplicates += 1 if m else 0
    if dead_envs:
        meta.refusal = REFUSALS.get(reason)
        deliverer.deliver(dead_envs[0].pixel_id, [pack_envelope(e) for e in dead_envs],
                          Attempt(f"x{m}", 5, last=True))
        meta.refusal = None
        filled.dead += len(dead_envs)
    for k in range(1 + m % 3):  # kept from Meta for want of consent: counted, never stored
        withheld.count(PIXELS[k % 2], EVENTS[k], "no_consent")
        filled.withheld += 1
    loop.run_until_complete(withheld.flush())


def _envelope(pixel: str, name: str, event_id: str, received_ms: int, n: int,
              click_id: str | None) -> Envelope:
    user = UserData(em=hashed(f"user{n}@shop.example"),
                    ph=hashed(f"4930{n:08d}") if n % 3 else None,
                    external_id=hashed(f"customer-{n}") if n % 2 else None,
                    fbp=f"fb.1.{received_ms}.{n}" if n % 4 else None,
                    client_ip_address="203.0.113.7", client_user_agent="Mozilla/5.0 (bench)")
    event = MetaEvent(event_name=name, event_time=received_ms // 1000, event_id=event_id,
                      action_source="website", user_data=user,
                      event_source_url="https://shop.example/",
                      custom_data={"currency": "EUR", "value": 12.5} if name == "Purchase"
                      else None)
    source = "redirect" if click_id and name == "PageView" else "server"
    return Envelope(pixel, event, received_ms, source, click_id)  # type: ignore[arg-type]


def _write(env: Envelope, settings: Settings) -> EventWrite:
    return EventWrite(queue_for(env.event.event_name, settings.relay), env.pixel_id,
                      env.dedup_key, env.received_ms, pack_envelope(env))


def _empty_inboxes(client: Any) -> None:
    """What the relay's batcher does with the inbox (the events were delivered directly)."""
    pipe = client.pipeline(transaction=False)
    for queue in QUEUE_NAMES.values():
        for pixel in PIXELS:
            pipe.delete(keys.inbox(queue, pixel))
        pipe.delete(keys.inbox_pixels(queue))
    pipe.execute()
