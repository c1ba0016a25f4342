"""Redis going away: the collector keeps answering, spools to disk, replays in order, and a
crash of the collector loses nothing it acknowledged."""

from __future__ import annotations

import itertools
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from relay import keys
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
    items = redis.client().lrange(LOW_INBOX, 0, -1)
    return [decode_envelope(i).event.user_data.fbc.rsplit(".", 1)[-1] for i in items]


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
    numbers = itertools.count()
    acknowledged: list[str] = []
    lock = threading.Lock()
    # One client per thread: the TLS context of a client per request would cost more than
    # the collector's answers, and one shared pool could keep to one worker.
    local = threading.local()
    clients: list[httpx.Client] = []

    def click() -> None:
        with lock:
            fbclid = f"click{next(numbers)}"
            if not hasattr(local, "client"):
                local.client = httpx.Client(timeout=10)
                clients.append(local.client)
        response = local.client.get(f"{base}/go/demo", params={"fbclid": fbclid},
                                    headers=BROWSER)
        if response.status_code == 302:
            with lock:
                acknowledged.append(fbclid)

    redis_server.stop()
    with ThreadPoolExecutor(8) as pool:
        for _ in pool.map(lambda _: click(), range(300)):
            pass
    spooling_workers = {p.parent.name for p in _spooled(tmp_path)}
    assert {"worker-0", "worker-1"} == spooling_workers, "both workers should have spooled"

    # When Redis comes back while clicks keep arriving, so both replay and append at once
    redis_server.restart()
    with ThreadPoolExecutor(8) as pool:
        for _ in pool.map(lambda _: click(), range(500)):
            pass

    for client in clients:
        client.close()

    # Then every acknowledged click is in the inbox, once, and nothing is left on disk
    wait_for(lambda: not _spooled(tmp_path), 20, what="the spool to drain")
    assert 800 == len(acknowledged)
    assert sorted(acknowledged) == sorted(_fbclids_in_inbox(redis_server))
