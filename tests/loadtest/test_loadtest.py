"""The short form of ``make loadtest``: a private stack, the day shape, the same verdict."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, VENV_BIN

EVENTS = 3000


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_short_day_delivers_every_acknowledged_event_exactly_once(tmp_path: Path) -> None:
    # Given a private stack (Redis, fake Meta at 200 ms, collector, three relay workers)
    # When locust plays a compressed day of EVENTS events through it; the p99 bound and the
    # time to send them are out of the way, since timing is for `make loadtest`, not for a
    # test on a shared machine
    done = subprocess.run(
        [str(VENV_BIN / "python"), str(ROOT / "loadtest" / "run.py"), "--events", str(EVENTS),
         "--duration-s", "20", "--p99-bound-ms", "600000", "--out", str(tmp_path),
         "--", "--overtime-s", "200"],
        capture_output=True, text=True, timeout=580, check=False)

    # Then the verdict passed, and the reconciliation counted every event on every side
    assert 0 == done.returncode, done.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    rec = summary["reconciliation"]
    assert summary["acknowledged"] >= EVENTS
    # the probe visitor beside locust clicked all along, and its clicks were reconciled too
    assert summary["probe_clicks"] > 100 and summary["redirect_p99_ms"] > 0
    assert ([], summary["acknowledged"]) == (rec["problems"], rec["accepted"])
    assert rec["acknowledged"] == rec["delivered"] + rec["dead"] == rec["at_meta"] + rec["dead"]
    report = (tmp_path / "report.md").read_text()
    assert "**PASSED**" in report and "## Reconciliation" in report
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust.html",
                 "requests.png", "latency.png", "delivered.png"):
        assert (tmp_path / name).stat().st_size > 0, name
