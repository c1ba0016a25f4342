"""Redis going away: the collector keeps answering, spools to disk, replays in order, and a
crash of the collector loses nothing it acknowledged."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from relay import keys
from relay.clicks import Clicks
from relay.events import decode_envelope
from tests.e2e.conftest import StartFn
from tests.support import (
    DEMO_API_KEY,
    DEMO_PIXEL,
    RedisServer,
    wait_for,
    wait_http,
    write_config,
)

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) outage-test"}
LOW_INBOX = keys.inbox("relay_low", DEMO_PIXEL)
HIGH_INBOX = keys.inbox("relay_high", DEMO_PIXEL)


def _click(base: str, n: int) -> None:
    response = httpx.get(f"{base}/go/demo", params={"fbclid": f"click{n}"}, headers=BROWSER)
    assert 302 == response.status_code, response.text


def _purchase(base: str, event_id: str) -> None:
    response = httpx.post(
        f"{base}/v1/events", headers={"Authorization": f"Bearer {DEMO_API_KEY}"},
        json={"event_name": "Purchase", "event_id": event_id,
              "event_source_url": "https://shop.example/thanks",
              "user_data": {"em": "a@b.example", "client_user_agent": "test"}})
    assert 202 == response.status_code, response.text


def _fbclids_in_inbox(redis: RedisServer) -> list[str]:
    """The fbclid of each PageView waiting, in order (from its click context, which holds the
    visitor's data for the redirect's events)."""
    client = redis.client()
    items = [decode_envelope(i) for i in client.lrange(LOW_INBOX, 0, -1)]
    clicks = Clicks(client).get_many(e.click_id or "" for e in items)
    return [(clicks[e.click_id or ""].fbc or "").rsplit(".", 1)[-1] for e in items]


class ConcurrentClicks:
    """Clicks from 8 threads, each with a client of its own (one shared pool could keep to one
    worker; a client per request costs more TLS setup than the collector's answers)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.acknowledged: list[str] = []
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[httpx.Client] = []

    def make(self, count: int) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: self._click(), range(count)))

    def _click(self) -> None:
        with self._lock:
            fbclid = f"click{next(self._numbers)}"
            if not hasattr(self._local, "client"):
                self._local.client = httpx.Client(timeout=10)
                self._clients.append(self._local.client)
        try:
            response = self._local.client.get(f"{self.base}/go/demo",
                                              params={"fbclid": fbclid}, headers=BROWSER)
        except httpx.TransportError:
            return  # the connection died with its worker: not acknowledged
        if response.status_code == 302:
            with self._lock:
                self.acknowledged.append(fbclid)

    def close(self) -> None:
        for client in self._clients:
            client.close()


def _spooled(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").rglob("*.spool"))


def test_events_acknowledged_while_redis_is_down_are_replayed_in_order(
        tmp_path: Path, redis_server: RedisServer, start_process: StartFn) -> None:
    # Given a collector in front of a working Redis
    config = write_config(tmp_path, redis_url=redis_server.url)
    port = tomllib.loads(config.read_text())["collector"]["port"]
    base = f"http://127.0.0.1:{port}"
    start_process("collector", "pixelrelay", "collector", "--config", str(config))
    wait_http(f"{base}/healthz")
    for n in range(10):
        _click(base, n)

    # When Redis stops, the collector keeps acknowledging, into the spool
    redis_server.stop()
    for n in range(10, 40):
        _click(base, n)
    _purchase(base, "order-during-outage")
    assert _spooled(tmp_path), "nothing was spooled while Redis was down"
    ready = httpx.get(f"{base}/readyz").json()
    assert (True, False, True) == (ready["ready"], ready["redis"], ready["spooling"])

    # Then, once Redis is back (same data directory, AOF), every event is there, in order
    redis_server.restart()
    wait_for(lambda: not _spooled(tmp_path), 20, what="the spool to drain")
    assert [f"click{n}" for n in range(40)] == _fbclids_in_inbox(redis_server)
    purchases = [decode_envelope(i) for i in redis_server.client().lrange(HIGH_INBOX, 0, -1)]
    assert ["order-during-outage"] == [p.event.event_id for p in purchases]
    for n in range(40, 45):  # and new events go straight to Redis again
        _click(base, n)
    assert [f"click{n}" for n in range(45)] == _fbclids_in_inbox(redis_server)


def test_a_collector_killed_while_spooling_loses_nothing_it_acknowledged(
        tmp_path: Path, redis_server: RedisServer, start_process: StartFn) -> None:
    # Given a collector spooling because Redis is down
    config = write_config(tmp_path, redis_url=redis_server.url)
    port = tomllib.loads(config.read_text())["collector"]["port"]
    base = f"http://127.0.0.1:{port}"
    collector = start_process("collector", "pixelrelay", "collector", "--config", str(config))
    wait_http(f"{base}/healthz")
    redis_server.stop()
    for n in range(25):
        _click(base, n)

    # When the collector is killed without warning, then Redis and a new collector start
    collector.kill()
    redis_server.restart()
    start_process("collector-2", "pixelrelay", "collector", "--config", str(config))
    wait_http(f"{base}/healthz")

    # Then the new collector replays what the dead one acknowledged
    wait_for(lambda: not _spooled(tmp_path), 20, what="the spool to drain")
    assert [f"click{n}" for n in range(25)] == _fbclids_in_inbox(redis_server)


def test_two_workers_spooling_and_replaying_side_by_side_lose_nothing(
        tmp_path: Path, redis_server: RedisServer, start_process: StartFn) -> None:
    # Given a collector with two worker processes, each spooling while Redis is down
    config = write_config(tmp_path, redis_url=redis_server.url, collector_lines="workers = 2")
    port = tomllib.loads(config.read_text())["collector"]["port"]
    base = f"http://127.0.0.1:{port}"
    start_process("collector", "pixelrelay", "collector", "--config", str(config))
    wait_http(f"{base}/healthz")
    clicks = ConcurrentClicks(base)
    redis_server.stop()
    clicks.make(300)
    assert {"worker-0", "worker-1"} == {p.parent.name for p in _spooled(tmp_path)}, (
        "both workers should have spooled")

    # When Redis comes back while clicks keep arriving, so both replay and append at once
    redis_server.restart()
    clicks.make(500)
    clicks.close()

    # Then every acknowledged click is in the inbox, once, and nothing is left on disk
    wait_for(lambda: not _spooled(tmp_path), 20, what="the spool to drain")
    assert 800 == len(clicks.acknowledged)
    assert sorted(clicks.acknowledged) == sorted(_fbclids_in_inbox(redis_server))


def _worker_pids(collector_pid: int) -> set[int]:
    children = Path(f"/proc/{collector_pid}/task/{collector_pid}/children").read_text()
    return {int(pid) for pid in children.split()}


def test_a_killed_worker_is_replaced_and_its_spool_replayed(
        tmp_path: Path, redis_server: RedisServer, start_process: StartFn) -> None:
    # Given a two-worker collector, both workers spooling while Redis is down
    config = write_config(tmp_path, redis_url=redis_server.url, collector_lines="workers = 2")
    port = tomllib.loads(config.read_text())["collector"]["port"]
    base = f"http://127.0.0.1:{port}"
    collector = start_process("collector", "pixelrelay", "collector", "--config", str(config))
    wait_http(f"{base}/healthz")
    workers = wait_for(lambda: len(_worker_pids(collector.pid)) == 2 and
                       _worker_pids(collector.pid), 10, what="two workers")
    clicks = ConcurrentClicks(base)
    redis_server.stop()
    clicks.make(200)
    assert {"worker-0", "worker-1"} == {p.parent.name for p in _spooled(tmp_path)}

    # When one worker is killed: granian starts another in its place
    os.kill(min(workers), signal.SIGKILL)
    wait_for(lambda: len(_worker_pids(collector.pid) - workers) == 1, 15,
             what="a replacement worker")
    redis_server.restart()
    clicks.make(100)
    clicks.close()

    # Then the collector kept running, and every click it acknowledged reached Redis, the dead
    # worker's spooled ones included (its replacement claims the directory and replays it)
    wait_for(lambda: not _spooled(tmp_path), 20, what="the spool to drain")
    assert collector.alive()
    assert 300 == len(clicks.acknowledged)
    assert sorted(clicks.acknowledged) == sorted(_fbclids_in_inbox(redis_server))
