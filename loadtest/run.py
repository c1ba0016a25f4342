"""``make loadtest``: a private stack, the ``day`` shape headless through locust, and a report.

    make loadtest                          # = .venv/bin/python loadtest/run.py
    .venv/bin/python loadtest/run.py --events 3000 --duration-s 20     # a short form
    .venv/bin/python loadtest/run.py --host http://127.0.0.1:8000 \\
        --redis-url redis://127.0.0.1:6390/0 --fake-meta-url http://127.0.0.1:8090 \\
        -- --api-key demo-api-key --origin http://127.0.0.1:8000           # a stack of yours

Without ``--host`` it starts, each on a free loopback port: a private Redis (valkey, AOF
everysec), the fake Graph API (``--fake-latency-ms``, keeping every event id), the collector as
``pixelrelay collector`` runs it (granian, one worker) and one relay worker per priority queue,
as ``pixelrelay up`` does; the config is ``tests.support.write_config``'s. Then it runs
``loadtest/locustfile.py`` headless with ``--shape`` (arguments after ``--`` go to locust) and
writes into ``--out`` (default ``var/loadtest/<UTC time>``): locust's CSVs (``locust_*.csv``,
full history), its HTML report (``locust.html``), ``summary.json`` (the verdict and figures) and
``report.md`` with charts (``*.png``) of requests/s, latency percentiles and delivered events/s.

The exit status is locust's: 0 when the verdict passed (no failed request, redirect p99 under the
bound, every acknowledged event delivered exactly once or dead with a reason within
``--deliver-within-s`` of the start), 1 when it did not; 2 when the stack did not start.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest import report  # noqa: E402
from tests.support import (  # noqa: E402
    VENV_BIN,
    Process,
    RedisServer,
    StartupError,
    free_port,
    stack_env,
    start_collector,
    start_fake_meta,
    start_relay_worker,
    write_config,
)

LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
QUEUES = ("high", "normal", "low")


def start_stack(directory: Path, processes: list[Process], fake_latency_ms: int,
                events: int) -> tuple[str, str, str]:
    """Redis, fake Meta, collector, relay workers; returns (collector, redis, fake) URLs."""
    redis = RedisServer(directory / "redis")
    try:
        redis.start()
    finally:
        if redis.process:
            processes.append(redis.process)
    meta = start_fake_meta(directory, FAKEMETA_LATENCY_MS=str(fake_latency_ms),
                           FAKEMETA_MAX_EVENTS_KEPT=str(max(4 * events, 100_000)))
    processes.append(meta.process)
    port = free_port()
    config = write_config(directory, redis_url=redis.url, graph_url=meta.url,
                          collector_port=port)
    env = stack_env(redis.url, meta.url)
    processes.append(start_collector(directory, config, port, env))
    for queue in QUEUES:
        processes.append(start_relay_worker(directory, config, env, queue, f"relay-{queue}"))
    return f"http://127.0.0.1:{port}", redis.url, meta.url


def locust_args(args: argparse.Namespace, host: str, redis_url: str, fake_meta_url: str,
                out: Path) -> list[str]:
    return [str(VENV_BIN / "locust"), "-f", str(LOCUSTFILE), "--headless", "--host", host,
            "--csv", str(out / "locust"), "--csv-full-history", "--html",
            str(out / "locust.html"), "--loglevel", "WARNING", "--shape", args.shape,
            "--events", str(args.events), "--duration-s", str(args.duration_s),
            "--rate", str(args.rate), "--p99-bound-ms", str(args.p99_bound_ms),
            "--deliver-within-s", str(args.deliver_within_s),
            "--redis-url", redis_url, "--fake-meta-url", fake_meta_url,
            "--summary-json", str(out / "summary.json"), *args.locust_args]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="day", choices=("day", "steady", "ramp", "spike"))
    parser.add_argument("--events", type=int, default=50_000, help="day: events to send")
    parser.add_argument("--duration-s", type=float, default=240,
                        help="day/steady: the run's length (the day compressed into it)")
    parser.add_argument("--rate", type=float, default=100,
                        help="steady/ramp/spike: events/s (see loadtest/shapes.py)")
    parser.add_argument("--p99-bound-ms", type=float, default=50.0,
                        help="the redirect p99 must stay under this")
    parser.add_argument("--deliver-within-s", type=float, default=300,
                        help="every event delivered or dead this long after the start")
    parser.add_argument("--fake-latency-ms", type=int, default=200,
                        help="the private fake Graph API's latency per request")
    parser.add_argument("--host", default="", help="a running collector instead of a stack")
    parser.add_argument("--redis-url", default="", help="with --host: its Redis")
    parser.add_argument("--fake-meta-url", default="", help="with --host: its fake Graph API")
    parser.add_argument("--out", type=Path, help="directory for the CSVs, HTML and report")
    parser.add_argument("locust_args", nargs="*", help="after --: more locust arguments")
    args = parser.parse_args(argv)
    if args.host and not (args.redis_url and args.fake_meta_url):
        parser.error("--host needs --redis-url and --fake-meta-url to reconcile")
    out = args.out or ROOT / "var" / "loadtest" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    processes: list[Process] = []
    load_before = report.load_average()
    try:
        if args.host:
            host, redis_url, fake_url = args.host, args.redis_url, args.fake_meta_url
        else:
            try:
                host, redis_url, fake_url = start_stack(out / "stack", processes,
                                                        args.fake_latency_ms, args.events)
            except (StartupError, AssertionError) as exc:
                print(f"loadtest: the stack did not start: {exc}", file=sys.stderr)
                return 2
        started = time.monotonic()
        rc = subprocess.run(locust_args(args, host, redis_url, fake_url, out),
                            check=False).returncode
        elapsed_s = time.monotonic() - started
    finally:
        for process in reversed(processes):
            process.stop(timeout_s=20)
    summary_path = out / "summary.json"
    if not summary_path.exists():
        print(f"loadtest: locust exited {rc} without a summary", file=sys.stderr)
        return rc or 2
    summary = json.loads(summary_path.read_text())
    context = {"load_before": load_before, "load_after": report.load_average(),
               "elapsed_s": elapsed_s, "stack": "private" if not args.host else args.host,
               "fake_latency_ms": args.fake_latency_ms if not args.host else None}
    path = report.write(out, summary, context)
    print(f"loadtest: report in {path}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
