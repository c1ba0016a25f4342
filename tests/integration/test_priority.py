"""A Purchase does not wait behind a backlog of PageViews: separate queues, separate workers."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.integration.conftest import FakeMeta, RelayStack, inject, make_envelope
from tests.support import wait_for

BACKLOG = 20_000
OVERTAKEN_MIN = BACKLOG // 4
PURCHASES = 20
P99_LIMIT_MS = 2_000


def test_purchases_overtake_a_backlog_of_pageviews(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    meta = fake_meta(FAKEMETA_LATENCY_MS="200", FAKEMETA_MAX_EVENTS_KEPT=str(BACKLOG))
    stack = relay_stack(meta)
    stack.worker("high")
    stack.inject([make_envelope("PageView") for _ in range(BACKLOG)])
    stack.worker("low")

    # When: Purchases arrive one by one while the PageViews drain.
    client = stack.client()
    purchases = []
    started = time.monotonic()
    for _ in range(PURCHASES):
        purchase = make_envelope("Purchase")
        inject(client, [purchase])
        purchases.append(purchase)
        time.sleep(0.005)  # pacing, like separate checkouts; nothing is awaited here
    injecting_s = time.monotonic() - started

    def every_purchase() -> dict[str, int]:
        found = meta.arrivals("Purchase")
        return found if len(found) == PURCHASES else {}  # empty: keep waiting

    arrivals = wait_for(every_purchase, 20, interval_s=0.1, what="every Purchase at fake Meta")
    last_arrival_ms = max(arrivals.values())
    wait_for(lambda: meta.pixel()["events"] >= BACKLOG + PURCHASES, 60, interval_s=0.2,
             what="the backlog to drain")
    overtaken = sum(1 for ms in meta.arrivals("PageView").values() if ms > last_arrival_ms)

    latencies = sorted(arrivals[p.event.event_id] - p.received_ms for p in purchases)
    p50, p99 = latencies[len(latencies) // 2], latencies[-1]  # nearest rank of 20: the max
    print(f"Purchase latency behind {BACKLOG} PageViews: p50 {p50} ms, p99 {p99} ms; "
          f"{overtaken} PageViews queued earlier arrived after the last Purchase "
          f"(Purchases injected over {injecting_s:.2f} s)")
    assert p99 <= P99_LIMIT_MS, latencies
    assert overtaken >= OVERTAKEN_MIN, "the Purchases did not overtake the backlog"
