"""Secrets and raw personal data never appear in logs, pages, error bodies or storage: every
file the whole test session left under pytest's base temporary directory (every process's log,
every spool segment, every Redis AOF, the pages the reliability suite kept) is scanned for the
access token, the API key and the raw emails and phones the tests sent.

Named ``zz`` so that, in a whole run, it comes after the other suites and sees what they left;
it also sends its own raw personal data through a live collector, so it never scans nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import LiveCollector
from tests.support import DEMO_API_KEY, DEMO_TOKEN, wait_for

RAW_EMAIL = "scan.victim+pii@example.com"
RAW_PHONE = "+1 (650) 555-0123"
NEEDLES = {
    "access token": DEMO_TOKEN.encode(),
    "API key": DEMO_API_KEY.encode(),
    "raw email": RAW_EMAIL.encode(),
    "raw email (bad-input suite)": b"victim@example.com",
    "raw email (good event)": b"a@b.example",
    "raw phone": b"650) 555-0123",
    "phone digits": b"16505550123",
}
# Files that are not the product's: the fake Meta is Meta's side of the wire (it sees the
# token by design); the scan's own planted sample (its test's temporary directory).
NOT_THE_PRODUCT = ("fakemeta", "fake-meta", "test_the_scan_finds_a_planted")


def scan(root: Path, needles: dict[str, bytes]) -> tuple[int, list[str]]:
    """(files scanned, "<file>: <what>" for every needle found)."""
    scanned, found = 0, []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(n in str(path.relative_to(root)) for n in NOT_THE_PRODUCT):
            continue
        data = path.read_bytes()
        scanned += 1
        found += [f"{path.relative_to(root)}: {what}" for what, needle in needles.items()
                  if needle in data]
    return scanned, found


def test_the_scan_finds_a_planted_secret(tmp_path: Path) -> None:
    root = tmp_path / "product"
    root.mkdir()
    (root / "collector.log").write_bytes(b'{"event": "x", "email": "' + RAW_EMAIL.encode()
                                             + b'"}\n')

    assert (1, ["collector.log: raw email"]) == scan(root, {"raw email": RAW_EMAIL.encode()})


def test_no_log_page_or_stored_byte_holds_a_secret_or_raw_personal_data(
        live_collector: LiveCollector, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Given raw personal data sent the ways clients send it, good and bad
    event: dict[str, Any] = {"event_name": "Lead", "action_source": "website",
             "event_source_url": "https://shop.example/p",
             "user_data": {"em": RAW_EMAIL, "ph": RAW_PHONE, "client_user_agent": "Mozilla/5.0"}}
    bad = {**event, "user_data": {**event["user_data"], "db": "not a date"}}
    pages = [httpx.post(f"{live_collector.base}/v1/events", json=body, timeout=10,
                        headers=live_collector.auth) for body in (event, bad, [event] * 3)]
    pages.append(httpx.post(f"{live_collector.base}/v1/events", json=event, timeout=10,
                            headers={"Authorization": f"Bearer {DEMO_API_KEY}x"}))
    pages.append(httpx.get(f"{live_collector.base}/metrics", timeout=10))
    pages.append(httpx.get(f"{live_collector.base}/readyz", timeout=10))
    kept = live_collector.config.parent / "pages.txt"
    kept.write_bytes(b"\n".join(p.content for p in pages))
    assert [202, 422, 202, 401] == [p.status_code for p in pages[:4]]
    client = live_collector.redis.client()
    wait_for(lambda: client.info("persistence")["aof_pending_bio_fsync"] == 0, 10,
             what="the AOF to be written")
    client.close()

    # When every file this session left is scanned
    scanned, found = scan(tmp_path_factory.getbasetemp(), NEEDLES)

    # Then none holds a needle
    assert scanned >= 3  # at least the collector's log, its pages and the Redis AOF
    assert [] == found
