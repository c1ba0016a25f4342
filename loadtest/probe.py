"""One visitor beside locust's: a redirect every ``--interval-ms`` on a new connection, timed by a
plain Python process, so the redirect latency the verdict judges is what a visitor waits for,
not locust's own scheduling.

Locust's times include the wait for its gevent loop to get back to a user after the answer
arrived: measured on the 2-core machine (docs/loadtest.md), 300 simulated users clicking 2 times
a second read a p50 of 69 ms from a collector that answered the same load, paced by wrk over 300
connections, at p50 0.84 ms and p99 2.68 ms. This probe asks the same collector at the same time
and reports what it saw.

    python loadtest/probe.py URL --interval-ms 20 --out FILE   (until SIGTERM or SIGINT)

``FILE`` gets a JSON list of latencies in ms, one per answered redirect, and the count of
requests that failed (no answer, or not a 302), when the probe stops.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

USER_AGENT = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.41.98]")


def click(url: str, timeout_s: float = 10.0) -> float | None:
    """Milliseconds to a 302 for one GET on a new connection, or None if it did not come."""
    parts = urlsplit(url)
    started = time.perf_counter()
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                            timeout=timeout_s)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}",
                           headers={"User-Agent": USER_AGENT, "Referer": "https://m.facebook.com/"})
        response = connection.getresponse()
        response.read()
        if response.status != 302:
            return None
    except OSError:
        return None
    finally:
        connection.close()
    return (time.perf_counter() - started) * 1000


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="a redirect, e.g. http://127.0.0.1:8000/go/demo?fbclid=x")
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    latencies: list[float] = []
    failed = 0
    next_at = time.monotonic()
    while not stop:
        took = click(args.url)
        if took is None:
            failed += 1
        else:
            latencies.append(round(took, 3))
        next_at += args.interval_ms / 1000
        time.sleep(max(0.0, next_at - time.monotonic()))
    args.out.write_text(json.dumps({"latencies_ms": latencies, "failed": failed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
