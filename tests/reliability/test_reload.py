"""Configuration reload under load (``kill -HUP`` of a live collector): new links, pixels and API
keys are served without a dropped request or a lost event, the workers reload in place (none is
replaced), and a broken new file is refused while the last good configuration keeps serving
(collector/reload.py, collector/_granian.py)."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from relay import keys
from relay.config import RelaySettings
from relay.events import decode_envelope
from relay.queues import queue_for
from tests.reliability.conftest import LiveCollector, collector_on
from tests.reliability.table import Row, record
from tests.support import DEMO_PIXEL, RedisServer, wait_for

pytestmark = pytest.mark.slow
NEW_KEY = "second-api-key"
NEW_PIXEL = "222222222222"
NEW_LINK = f"""
[[pixels]]
id = "{NEW_PIXEL}"
access_token_env = "PIXELRELAY_TEST_TOKEN"

[[links]]
slug = "spring"
destination = "https://shop.example/spring?cid={{click_id}}"
pixels = ["{DEMO_PIXEL}"]

[[api_keys]]
name = "second"
sha256 = "{hashlib.sha256(NEW_KEY.encode()).hexdigest()}"
"""


class Load(threading.Thread):
    """Clicks and server events, one after the other, until stopped; every answer kept."""

    def __init__(self, collector: LiveCollector, name: str, *, keep_alive: bool) -> None:
        super().__init__(daemon=True)
        self.collector = collector
        self.name = name
        # Connection: close opens a connection per request: one refused at the door shows.
        self.headers = {"User-Agent": "Mozilla/5.0 (X11; Linux)"}
        if not keep_alive:
            self.headers["Connection"] = "close"
        self.statuses: Counter[str] = Counter()
        self.accepted: list[str] = []
        self.stop_requested = threading.Event()

    def run(self) -> None:
        n = 0
        with httpx.Client(timeout=10, headers=self.headers) as c:
            while not self.stop_requested.is_set():
                n += 1
                try:
                    click = c.get(f"{self.collector.base}/go/demo")
                    event = c.post(f"{self.collector.base}/v1/events", headers=self.collector.auth,
                                   json={"event_name": "Lead", "event_id": f"{self.name}-{n}",
                                         "event_source_url": "https://shop.example/p",
                                         "user_data": {"em": "a@b.example",
                                                       "client_user_agent": "Mozilla/5.0"}})
                except httpx.HTTPError as exc:
                    self.statuses[type(exc).__name__] += 1
                    time.sleep(0.01)
                    continue
                self.statuses[f"go {click.status_code}"] += 1
                self.statuses[f"events {event.status_code}"] += 1
                if event.status_code == 202:
                    self.accepted.append(f"{self.name}-{n}")


def answers(collector: LiveCollector) -> tuple[int, int, int]:
    """(status of the new link, of an event sent with the new key, of one for the new pixel)."""
    link = httpx.get(f"{collector.base}/go/spring", timeout=5)
    body = {"event_name": "Lead", "event_source_url": "https://shop.example/p",
            "user_data": {"em": "b@c.example", "client_user_agent": "UA"}}
    event = httpx.post(f"{collector.base}/v1/events", timeout=5, json=body,
                       headers={"Authorization": f"Bearer {NEW_KEY}"})
    pixel = httpx.post(f"{collector.base}/v1/events", timeout=5, headers=collector.auth,
                       json=body | {"pixel_id": NEW_PIXEL})
    return link.status_code, event.status_code, pixel.status_code


def reloads_done(collector: LiveCollector, event: str, workers: int) -> int:
    """How many times every worker has logged ``event``."""
    return collector.process.output().count(f'"{event}"') // workers


def test_reload_under_load_serves_the_new_config_and_refuses_a_broken_one(
        tmp_path: Path, redis_server: RedisServer) -> None:
    with collector_on(tmp_path, redis_server, "workers = 2") as collector:
        loads = [Load(collector, "kept", keep_alive=True),
                 Load(collector, "fresh", keep_alive=False)]
        for load in loads:
            load.start()
        wait_for(lambda: all(len(load.accepted) >= 20 for load in loads), 30,
                 what="load to run")
        started = collector.process.output().count('"collector_started"')
        assert 2 == started
        good = collector.config.read_text()
        assert (404, 401, 422) == answers(collector)

        # When a pixel, a link and an API key are added and the collector is told to reload
        collector.config.write_text(good + NEW_LINK)
        reloaded = time.monotonic()
        os.kill(collector.process.pid, signal.SIGHUP)  # granian itself, not its workers

        # Then both workers serve them, without a dropped request
        wait_for(lambda: reloads_done(collector, "config_reloaded", 2) >= 1, 30,
                 what="both workers to reload")
        recover_s = time.monotonic() - reloaded
        for _ in range(6):  # whichever worker answers
            assert (302, 202, 202) == answers(collector)

        # When a broken file is reloaded
        collector.config.write_text(good + NEW_LINK + "\n[[links]]\nslug = 'x'\n")
        os.kill(collector.process.pid, signal.SIGHUP)
        wait_for(lambda: reloads_done(collector, "config_reload_refused", 2) >= 1, 30,
                 what="both workers to refuse the broken file")

        # Then the last good configuration keeps serving, in the same workers
        assert collector.process.alive(), collector.process.output()[-3000:]
        for _ in range(6):
            assert (302, 202, 202) == answers(collector)
        wait_for(lambda: all(len(load.accepted) >= 40 for load in loads), 30,
                 what="the load to run past the second reload")
        for load in loads:
            load.stop_requested.set()
            load.join(15)
        assert started == collector.process.output().count('"collector_started"'), (
            "a worker was replaced")

    client = redis_server.client()
    inbox = keys.inbox(queue_for("Lead", RelaySettings()), DEMO_PIXEL)
    stored = {decode_envelope(i).event.event_id for i in client.lrange(inbox, 0, -1)}
    accepted = {event_id for load in loads for event_id in load.accepted}
    statuses = sum((load.statuses for load in loads), Counter())
    missing = accepted - stored
    answered = statuses["go 302"] + statuses["events 202"]
    record(Row("config reload under load (SIGHUP), then a broken one",
               sum(statuses.values()), refused=answered,
               sent=len(accepted), delivered=len(accepted) - len(missing),
               lost=len(missing), recover_s=recover_s))
    print(f"reload: {statuses}")
    # Every request answered as promised (302, 202): none refused, reset or failed; nothing
    # acknowledged lost.
    assert {"go 302", "events 202"} == set(statuses), statuses
    assert set() == missing
