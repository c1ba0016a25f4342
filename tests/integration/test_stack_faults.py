"""Faults of the whole stack under load through the collector's HTTP door: ``pixelrelay
collector`` (granian, two workers) -> a private valkey (AOF everysec) -> ``pixelrelay relay``
-> the fake Graph API. One stack serves the module's tests, in order (the last one stops every
process and starts them again). Each fault is followed by a reconciliation of every event the
collector acknowledged (202): delivered, dead with a reason, sent twice, lost (must be 0).

Redis stays down ``PIXELRELAY_FAULT_REDIS_OUTAGE_S`` (default 5 s, to keep ``make test``
short; the issue's 60 s is ``make test-reliability-full``, docs/reliability.md).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from relay.config import RelaySettings
from relay.deadletters import DeadLetters
from tests.integration.test_fault_suite import REDIS_OUTAGE_S, SETTLE_S, drained
from tests.reliability.table import Row, record
from tests.support import (
    DEMO_API_KEY,
    FakeMeta,
    Process,
    RedisServer,
    child_pids,
    stack_env,
    start_fake_meta,
    start_relay_worker,
    wait_for,
    wait_http,
    write_config,
)

pytestmark = pytest.mark.slow
LEDGER_TTL_S = RelaySettings().ledger_ttl_days * 86_400
EVENTS_PER_POST = 10


@dataclass
class Stack:
    """The module's processes; ``start_*`` (re)start one after a fault stopped it."""

    directory: Path
    redis: RedisServer
    meta: FakeMeta
    config: Path
    env: dict[str, str]
    collector: Process | None = None
    relay: Process | None = None
    runs: int = 0

    @property
    def base(self) -> str:
        port = tomllib.loads(self.config.read_text())["collector"]["port"]
        return f"http://127.0.0.1:{port}"

    def start_collector(self) -> Process:
        self.runs += 1
        self.collector = Process(
            [sys.executable, "-m", "pixelrelay", "collector", "--config", str(self.config)],
            self.directory / f"collector-{self.runs}.log", env=self.env).start()
        wait_http(f"{self.base}/healthz")
        wait_for(lambda: 2 == self.collector_output().count('"collector_started"'), 30,
                 what="both collector workers")
        return self.collector

    def start_relay(self) -> Process:
        self.relay = start_relay_worker(self.directory, self.config, self.env,
                                        name=f"relay-{self.runs}")
        return self.relay

    def collector_output(self) -> str:
        return self.collector.output() if self.collector else ""

    def stop(self) -> None:
        for process in (self.collector, self.relay):
            if process is not None:
                process.stop(timeout_s=20)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, module_redis: RedisServer) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("stack")
    meta = start_fake_meta(directory, FAKEMETA_LATENCY_MS="50", FAKEMETA_MAX_EVENTS_KEPT="200000")
    config = write_config(directory, redis_url=module_redis.url, graph_url=meta.url,
                          collector_lines="workers = 2")
    built = Stack(directory, module_redis, meta, config, stack_env(module_redis.url, meta.url))
    try:
        built.start_collector()
        built.start_relay()
        yield built
    finally:
        built.stop()
        meta.process.stop()


class Load(threading.Thread):
    """Server events posted through the collector, ``EVENTS_PER_POST`` a request, until stopped;
    the ids of every acknowledged (202) post are kept, and every other outcome counted."""

    def __init__(self, stack: Stack, tag: str) -> None:
        super().__init__(daemon=True)
        self.stack, self.tag = stack, tag
        self.acked: list[str] = []
        self.outcomes: Counter[str] = Counter()
        self.stop_requested = threading.Event()

    def run(self) -> None:
        n = 0
        # A connection per request (Connection: close), so both workers get a share.
        headers = {"Authorization": f"Bearer {DEMO_API_KEY}", "Connection": "close"}
        with httpx.Client(timeout=10, headers=headers) as c:
            while not self.stop_requested.is_set():
                ids = [f"{self.tag}-{n + i}" for i in range(EVENTS_PER_POST)]
                n += EVENTS_PER_POST
                try:
                    response = c.post(f"{self.stack.base}/v1/events", json=[
                        {"event_name": "Lead", "event_id": i, "action_source": "website",
                         "event_source_url": "https://shop.example/p",
                         "user_data": {"em": "a@b.example", "client_user_agent": "Mozilla/5.0"}}
                        for i in ids])
                except httpx.HTTPError as exc:  # the door closed (a fault): not acknowledged
                    self.outcomes[type(exc).__name__] += 1
                    time.sleep(0.05)
                    continue
                self.outcomes[str(response.status_code)] += 1
                if response.status_code == 202:
                    self.acked.extend(ids)
                time.sleep(0.01)  # a steady stream, not a flood

    def until(self, count: int, what: str) -> None:
        wait_for(lambda: len(self.acked) >= count, 60, what=f"{what}: {count} acknowledged")

    def finish(self) -> None:
        self.stop_requested.set()
        self.join(20)


@pytest.fixture
def load(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Load]:
    running = Load(stack, request.node.name)
    running.start()
    yield running
    running.finish()


def reconcile(stack: Stack, load: Load, what: str, started: float) -> Row:
    """Stop the load, wait until everything acknowledged is delivered (or nothing is left to
    do), then account for each acknowledged event; record the row."""
    load.finish()
    acked = set(load.acked)

    def settled() -> bool:
        return acked <= stack.meta.event_ids().keys() or (
            drained(stack.redis) and not spooling(stack))

    wait_for(settled, SETTLE_S, interval_s=0.5, what=f"{what}: to settle")
    ids = stack.meta.event_ids()
    delivered = len(acked & ids.keys())
    client = stack.redis.client()
    dead = sum(1 for letter in DeadLetters(client, LEDGER_TTL_S).list(0, 10_000)
               if letter.envelope.event.event_id in acked)
    client.close()
    row = Row(what, 1, sent=len(acked), delivered=delivered, dead=dead,
              twice=sum(1 for i in acked if ids[i] > 1), lost=len(acked) - delivered - dead,
              recover_s=time.monotonic() - started)
    record(row)
    print(f"{what}: {dict(load.outcomes)}")
    return row


def spooling(stack: Stack) -> bool:
    try:
        return bool(httpx.get(f"{stack.base}/readyz", timeout=5).json()["spooling"])
    except httpx.HTTPError:
        return True  # not answering: not known to be done


def test_kill_9_of_a_collector_worker_under_load(stack: Stack, load: Load) -> None:
    # Given events flowing through both workers
    load.until(300, "before the kill")
    assert stack.collector is not None
    workers = child_pids(stack.collector.pid)
    assert 2 == len(workers), workers

    # When one worker is killed -9
    os.kill(workers[0], signal.SIGKILL)
    killed = time.monotonic()

    # Then granian starts another in its place, the other one keeps answering meanwhile, and
    # nothing acknowledged is lost
    wait_for(lambda: 3 == stack.collector_output().count('"collector_started"'), 30,
             what="the worker to be replaced")
    assert workers[0] not in child_pids(stack.collector.pid)
    load.until(len(load.acked) + 300, "after the respawn")
    row = reconcile(stack, load, "kill -9 of a collector worker under load (2 workers, "
                    "respawned)", killed)
    assert (0, 0) == (row.dead, row.lost), row
    assert stack.collector.alive()


@pytest.mark.timeout(120 + 2 * REDIS_OUTAGE_S)
def test_redis_stopped_under_load_the_collector_spools_and_replays(
        stack: Stack, load: Load) -> None:
    load.until(300, "before the outage")

    # When Redis stops for the outage's length under load
    stack.redis.stop()
    stopped = time.monotonic()
    before = len(load.acked)
    wait_for(lambda: time.monotonic() - stopped >= REDIS_OUTAGE_S, REDIS_OUTAGE_S + 5,
             what="the outage")
    spooled = len(load.acked) - before
    stack.redis.start()

    # Then the collector acknowledged what it spooled meanwhile, replays it, and the relay
    # delivers every acknowledged event once
    row = reconcile(stack, load, f"Redis stopped {REDIS_OUTAGE_S:.0f} s under load, through the "
                    "collector (spooled, replayed) and the relay", stopped)
    print(f"acknowledged while Redis was down: {spooled}")
    assert spooled > 0, "nothing was spooled while Redis was down"
    assert (0, 0, 0) == (row.dead, row.lost, row.twice), row


def test_sigterm_of_every_process_under_load(stack: Stack, load: Load) -> None:
    load.until(300, "before the SIGTERM")
    assert stack.collector is not None and stack.relay is not None
    collector, relay = stack.collector, stack.relay

    # When the collector and the relay worker are sent SIGTERM at once, and Redis once they
    # have exited (systemctl stop pixelrelay.target, then Redis: the units are After= it)
    for process in (collector, relay):
        process.signal(signal.SIGTERM)
    stopped = time.monotonic()
    codes = [process.popen.wait(60) if process.popen else None for process in (collector, relay)]
    stack.redis.stop()

    # Then each drained and exited 0; started again, they deliver every acknowledged event
    stack.redis.start()
    stack.start_relay()
    stack.start_collector()
    load.until(len(load.acked) + 300, "after the restart")
    row = reconcile(stack, load, "SIGTERM of every process under load (collector and relay, "
                    "then Redis), started again", stopped)
    assert [0, 0] == codes, (collector.output()[-2000:], relay.output()[-2000:])
    assert (0, 0) == (row.dead, row.lost), row
