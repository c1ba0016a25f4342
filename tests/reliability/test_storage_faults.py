"""Storage faults at the collector's door, on a live collector (granian, real Redis): Redis at
``maxmemory`` with ``noeviction``, and the spool's disk full while Redis is down. The promise
is the same for both: an event is acknowledged (202) only once it is stored; otherwise the
answer is a 503 with a sentence and ``Retry-After``; nothing acknowledged is lost. A redirect
that cannot be stored still redirects, and the click lost is counted."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
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
PADDING = "p" * 2_000  # custom_data that makes each event cost Redis a few kB


def lead(n: int, tag: str) -> dict[str, object]:
    return {"event_name": "Lead", "event_id": f"{tag}-{n}", "action_source": "website",
            "event_source_url": "https://shop.example/p", "custom_data": {"note": PADDING},
            "user_data": {"em": "a@b.example", "client_user_agent": "Mozilla/5.0"}}


def send(collector: LiveCollector, tag: str, count: int) -> dict[str, int]:
    """POST ``count`` events one by one; event_id -> status."""
    answers = {}
    with httpx.Client(timeout=10, headers=collector.auth) as client:
        for n in range(count):
            response = client.post(f"{collector.base}/v1/events", json=lead(n, tag))
            assert response.status_code in (202, 503), response.text
            if response.status_code == 503:
                assert ("1", True) == (response.headers.get("retry-after"),
                                       "retry shortly" in response.json()["error"])
            answers[f"{tag}-{n}"] = response.status_code
    return answers


def stored_ids(redis: RedisServer) -> set[str]:
    client = redis.client()
    try:
        inbox = keys.inbox(queue_for("Lead", RelaySettings()), DEMO_PIXEL)
        return {decode_envelope(i).event.event_id for i in client.lrange(inbox, 0, -1)}
    finally:
        client.close()


def not_spooling(collector: LiveCollector) -> bool:
    return httpx.get(f"{collector.base}/readyz", timeout=5).json()["spooling"] is False


def test_redis_at_maxmemory_never_gets_a_false_202(tmp_path: Path,
                                                   redis_server: RedisServer) -> None:
    with collector_on(tmp_path, redis_server) as collector:
        # Given Redis a few hundred kB from its maxmemory, with noeviction
        client = redis_server.client()
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 300_000)

        # When events keep coming past that point
        answers = send(collector, "oom", 400)
        spooled = not not_spooling(collector)

        # Then each is stored in Redis or in the spool (202), or refused (503); once memory is
        # raised again, every acknowledged one is in Redis
        client.config_set("maxmemory", 0)
        started = time.monotonic()
        wait_for(lambda: not_spooling(collector), 30, what="the spool to replay")
        accepted = {i for i, status in answers.items() if status == 202}
        missing = accepted - stored_ids(redis_server)
        record(Row("Redis at maxmemory (noeviction)", len(answers), sent=len(accepted),
                   delivered=len(accepted) - len(missing), lost=len(missing),
                   recover_s=time.monotonic() - started))
        client.close()
        assert spooled or 503 in answers.values(), "Redis never reached its maxmemory"
        assert set() == missing


@pytest.fixture
def tiny_spool_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 kB tmpfs where the collector's spool will be (``write_config``: tmp/spool)."""
    spool = tmp_path / "spool"
    spool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(spool)], check=True)
    try:
        yield spool
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=True)


def unrecorded_clicks(collector: LiveCollector) -> float:
    text = httpx.get(f"{collector.base}/metrics", timeout=5).text
    [value] = [float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("pixelrelay_collector_unrecorded_clicks_total ")]
    return value


def test_a_full_spool_disk_refuses_events_with_a_503_redirects_and_loses_nothing_acknowledged(
        tmp_path: Path, redis_server: RedisServer, tiny_spool_disk: Path) -> None:
    with collector_on(tmp_path, redis_server) as collector:
        # Given Redis down: the collector spools onto a 256 kB disk
        redis_server.stop()

        # When more events arrive than the disk holds, then visitors click
        answers = send(collector, "full", 200)
        with httpx.Client(timeout=10, headers={"User-Agent": "Mozilla/5.0 (X11; Linux)"}) as c:
            clicks = [c.get(f"{collector.base}/go/demo?fbclid=IwAR_disk_full_{n}")
                      for n in range(5)]

        # Then the first events were acknowledged, the rest refused with a 503; the visitors
        # were sent on, their clicks counted as not recorded and logged
        assert {(302, "shop.example")} == {
            (r.status_code, httpx.URL(r.headers["location"]).host) for r in clicks}
        assert 5 == unrecorded_clicks(collector)
        assert 5 == collector.process.output().count('"click_not_recorded"')

        # After Redis returns, every acknowledged event is there
        redis_server.start()
        started = time.monotonic()
        wait_for(lambda: not_spooling(collector), 30, what="the spool to replay")
        accepted = {i for i, status in answers.items() if status == 202}
        missing = accepted - stored_ids(redis_server)
        record(Row("spool disk full, Redis down (events: 503; redirects: 302, click lost)",
                   len(answers) + len(clicks), sent=len(accepted),
                   delivered=len(accepted) - len(missing), lost=len(missing),
                   recover_s=time.monotonic() - started))
        assert accepted and 503 in answers.values(), answers
        assert set() == missing
