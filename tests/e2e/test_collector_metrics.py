"""/metrics of a collector with several worker processes describes the whole collector, whichever
worker answers the scrape."""

from __future__ import annotations

import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import StartFn
from tests.support import Process, RedisServer, wait_http, write_config

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) metrics-test"}
CLICKS = 200
SCRAPES = 12


def _samples(exposition: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(exposition)
            for s in family.samples if s.name == name]


def _value(exposition: str, name: str, **labels: str) -> float:
    return sum(value for sample_labels, value in _samples(exposition, name)
               if sample_labels == labels)


def _start(start_process: StartFn, name: str, config: Path, temp: Path) -> tuple[Process, str]:
    """Start a collector whose temporary files go to ``temp``; it and its base URL."""
    port = tomllib.loads(config.read_text())["collector"]["port"]
    process = start_process(name, "pixelrelay", "collector", "--config", str(config),
                            env={"TMPDIR": str(temp)})
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz")
    return process, base


def _click(base: str, n: int) -> int:
    response = httpx.get(f"{base}/go/demo", params={"fbclid": f"click{n}"}, headers=BROWSER,
                         timeout=10)
    return response.status_code


def _clicks(base: str, count: int) -> None:
    """``count`` redirects, each on a connection of its own (so both workers get some)."""
    with ThreadPoolExecutor(8) as pool:
        assert [302] * count == list(pool.map(lambda n: _click(base, n), range(count)))


def _scrapes(base: str) -> list[str]:
    """/metrics, SCRAPES times, each on a new connection: whichever worker takes it answers."""
    return [httpx.get(f"{base}/metrics", timeout=5).text for _ in range(SCRAPES)]


def _redirects(scrape: str) -> float:
    return _value(scrape, "pixelrelay_collector_requests_total", route="go", status="302")


def _metrics_dirs(temp: Path) -> list[Path]:
    return sorted(temp.glob("pixelrelay-collector-metrics-*"))


def test_every_scrape_of_a_two_worker_collector_counts_every_request(
        tmp_path: Path, redis_server: RedisServer, start_process: StartFn) -> None:
    # Given a collector with two worker processes
    config = write_config(tmp_path, redis_url=redis_server.url, collector_lines="workers = 2")
    temp = tmp_path / "tmp"
    temp.mkdir()
    _, base = _start(start_process, "collector", config, temp)

    # When it answers 200 redirects
    _clicks(base, CLICKS)

    # Then every scrape, whichever worker answers it, counts all of them
    scrapes = _scrapes(base)
    assert [float(CLICKS)] * SCRAPES == [_redirects(s) for s in scrapes]
    events = [_value(s, "pixelrelay_collector_events_total", source="redirect") for s in scrapes]
    assert [float(CLICKS)] * SCRAPES == events
    groups = {_value(s, "pixelrelay_collector_enqueue_seconds_count", destination="redis")
              for s in scrapes}  # the enqueuer may store several clicks as one group
    assert 1 == len(groups) and 0 < groups.pop() <= CLICKS
    # and each gauge is one series for the collector, not one per worker
    for scrape in scrapes:
        assert [({}, 0.0)] == _samples(scrape, "pixelrelay_collector_spooling")
        assert [({}, 0.0)] == _samples(scrape, "pixelrelay_collector_spool_pending_bytes")
    # the two workers wrote their counters to files side by side, in a directory of their own
    [directory] = _metrics_dirs(temp)
    assert 2 == len(list(directory.glob("counter_*.db")))


def test_a_restarted_collector_counts_from_zero(
        tmp_path: Path, redis_server: RedisServer, start_process: StartFn) -> None:
    # Given a two-worker collector that counted 30 redirects, then stopped
    config = write_config(tmp_path, redis_url=redis_server.url, collector_lines="workers = 2")
    temp = tmp_path / "tmp"
    temp.mkdir()
    collector, base = _start(start_process, "collector", config, temp)
    _clicks(base, 30)
    assert 30.0 == _redirects(httpx.get(f"{base}/metrics").text)
    [first_dir] = _metrics_dirs(temp)
    assert 0 == collector.stop()

    # When it starts again and answers 5 more
    _, base = _start(start_process, "collector-2", config, temp)
    _clicks(base, 5)

    # Then its metrics count those 5 only, from files in a new directory (the old one is gone)
    assert [5.0] * SCRAPES == [_redirects(s) for s in _scrapes(base)]
    [second_dir] = _metrics_dirs(temp)
    assert first_dir != second_dir
