"""In-process CPU per redirect through ``CollectorApp``, beside the Litestar response path.

    .venv/bin/python loadtest/bench_handler.py [--requests N] [--rounds R] [--profile]

No server, no Redis, no wrk: the collector's ASGI app is called with the scope granian gives
it for ``GET /go/demo?fbclid=abc&utm_source=fb`` (a browser, no cookies), its enqueuer only
counting the writes. So the figure is the Python work of one redirect alone (routing, query,
ids, cookies, the events encoded, the response), the part this code controls, measured as CPU
time of this process. Rounds alternate the fast ASGI path (``collector.asgi``) with Litestar's
``to_asgi_response`` as the reference, so both see the same machine. ``--profile`` prints
cProfile's top functions of one more fast round. On a shared machine the absolute figures
move with the load; the ratio moves much less.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import collector.app as collector_app  # noqa: E402
from collector.context import CollectorContext  # noqa: E402
from collector.metrics import CollectorMetrics  # noqa: E402
from loadtest._harness import BROWSER_UA, load_average, machine_summary  # noqa: E402
from relay.config import load_settings  # noqa: E402
from tests.support import write_config  # noqa: E402


class _Counting:
    """Stands in for the DurableEnqueuer: counts the writes, stores nothing."""

    def __init__(self) -> None:
        self.writes = 0

    async def store(self, writes: Sequence[object]) -> None:
        self.writes += len(writes)


def _scope() -> dict[str, Any]:
    return {"type": "http", "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": "/go/demo", "raw_path": b"/go/demo", "root_path": "",
            "query_string": b"fbclid=abc&utm_source=fb", "client": ("127.0.0.1", 50_000),
            "server": ("127.0.0.1", 8000), "state": {}, "extensions": {},
            "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", BROWSER_UA.encode()),
                        (b"accept", b"*/*")]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="redirects per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each path")
    parser.add_argument("--profile", action="store_true", help="cProfile one more round")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(write_config(Path(tmp), redis_url="redis://127.0.0.1:9/0"),
                                 environ={})
    enqueuer = _Counting()
    ctx = CollectorContext(settings, enqueuer, CollectorMetrics())  # type: ignore[arg-type]
    app = collector_app.CollectorApp(collector_app.Litestar([]), ctx)
    fast = collector_app.response_messages

    async def send(message: Any) -> None:
        pass

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def run(n: int) -> None:
        for _ in range(n):
            await app(_scope(), receive, send)  # type: ignore[arg-type]

    loop = asyncio.new_event_loop()
    loop.run_until_complete(run(2_000))  # warm-up: caches, first-use counters
    print(f"machine: {machine_summary('litestar', 'msgspec')}; load average {load_average()}")
    results: dict[str, list[float]] = {"fast ASGI path": [], "Litestar response (ref)": []}
    for _ in range(args.rounds):
        for label, sender in (("fast ASGI path", fast),
                              ("Litestar response (ref)", lambda response: None)):
            collector_app.response_messages = sender
            started = time.process_time()
            loop.run_until_complete(run(args.requests))
            results[label].append((time.process_time() - started) / args.requests * 1e6)
    collector_app.response_messages = fast
    for label, values in results.items():
        print(f"  {label:<24} median {sorted(values)[len(values) // 2]:6.1f} us CPU per "
              f"redirect (rounds: {', '.join(f'{v:.1f}' for v in values)})")
    ratio = sorted(results["fast ASGI path"])[args.rounds // 2] / \
        sorted(results["Litestar response (ref)"])[args.rounds // 2]
    print(f"  ratio fast/reference: {ratio:.2f}; {enqueuer.writes:,} writes made")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(loop.run_until_complete, run(args.requests))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
