"""Metrics of a collector with several worker processes: each writes its own files to
$PROMETHEUS_MULTIPROC_DIR and /metrics, whichever worker renders it, adds them up."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.metrics import MULTIPROC_DIR_ENV, CollectorMetrics
from pixelrelay.cli import _collector_metrics_dir
from tests.support import ROOT

# A stand-in for a granian worker: prometheus_client is first imported with the variable set,
# as in a real worker. Commands on stdin; each answer ends with a line holding only ".".
WORKER = """
import sys
from collector.metrics import CollectorMetrics

metrics = CollectorMetrics()
for command in sys.stdin:
    verb, *args = command.split()
    if verb == "click":
        metrics.requests.labels("go", "302").inc(int(args[0]))
    elif verb == "spool":
        metrics.spool_state(args[0] == "1", int(args[1]))
    elif verb == "render":
        sys.stdout.write(metrics.render().decode())
    print(".", flush=True)
"""


class Worker:
    def __init__(self, directory: Path) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-c", WORKER], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, MULTIPROC_DIR_ENV: str(directory)},
        )

    def ask(self, command: str) -> str:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.write(command + "\n")
        self.popen.stdin.flush()
        lines = []
        while (line := self.popen.stdout.readline()) not in (".\n", ""):
            lines.append(line)
        assert line, f"the worker died answering {command!r}"
        return "".join(lines)

    def exit(self) -> None:
        if self.popen.poll() is None:
            assert self.popen.stdin is not None
            self.popen.stdin.close()
            self.popen.wait(10)
            assert self.popen.stdout is not None
            self.popen.stdout.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[Worker, Worker]]:
    directory = tmp_path / "metrics"
    directory.mkdir()
    pair = Worker(directory), Worker(directory)
    try:
        yield pair
    finally:
        for worker in pair:
            worker.exit()


def samples(exposition: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(exposition)
            for s in family.samples if s.name == name]


REDIRECTS = "pixelrelay_collector_requests_total"
SPOOLING = "pixelrelay_collector_spooling"
PENDING = "pixelrelay_collector_spool_pending_bytes"
GO_302 = {"route": "go", "status": "302"}


def test_counters_of_two_workers_add_up_whichever_renders(
        workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    a.ask("click 3")
    b.ask("click 4")
    for renderer in (a, b):
        assert [(GO_302, 7.0)] == samples(renderer.ask("render"), REDIRECTS)


def test_gauges_describe_the_workers_alive_now(workers: tuple[Worker, Worker]) -> None:
    # Given one worker spooling with 100 bytes pending and one writing to Redis with 50 left
    a, b = workers
    a.ask("spool 1 100")
    b.ask("spool 0 50")
    b.ask("click 4")

    # Then the collector is spooling (the max), 150 bytes pending (the sum), one series each
    text = a.ask("render")
    assert ([({}, 1.0)], [({}, 150.0)]) == (samples(text, SPOOLING), samples(text, PENDING))

    # When a worker has exited, its gauges no longer count, its counts still do
    b.exit()
    text = a.ask("render")
    assert ([({}, 1.0)], [({}, 100.0)]) == (samples(text, SPOOLING), samples(text, PENDING))
    assert [(GO_302, 4.0)] == samples(text, REDIRECTS)
    a.ask("spool 0 0")
    assert [({}, 0.0)] == samples(a.ask("render"), SPOOLING)


def test_without_the_variable_metrics_stay_in_this_process() -> None:
    metrics = CollectorMetrics()
    metrics.requests.labels("go", "302").inc()
    assert metrics.multiprocess_dir is None
    assert [(GO_302, 1.0)] == samples(metrics.render().decode(), REDIRECTS)


def test_the_variable_set_after_prometheus_client_was_imported_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))  # values already live in memory here
    with pytest.raises(RuntimeError, match="before prometheus_client is imported"):
        CollectorMetrics()


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_command_gives_several_workers_a_new_empty_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv(MULTIPROC_DIR_ENV, "set by someone else")  # restored after the test
    left_by_a_dead_run = tmp_path / f"pixelrelay-collector-metrics-{_dead_pid()}-abc"
    of_a_running_one = tmp_path / f"pixelrelay-collector-metrics-{os.getpid()}-def"
    for directory in (left_by_a_dead_run, of_a_running_one):
        directory.mkdir()
        (directory / "counter_1.db").write_bytes(b"old counts")

    _collector_metrics_dir(workers=2)

    directory = Path(os.environ[MULTIPROC_DIR_ENV])
    assert tmp_path == directory.parent
    assert directory.name.startswith(f"pixelrelay-collector-metrics-{os.getpid()}-")
    assert [] == list(directory.iterdir())
    assert {of_a_running_one, directory} == set(tmp_path.glob("pixelrelay-collector-metrics-*"))


def test_the_command_keeps_one_worker_s_metrics_in_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_DIR_ENV, "/somewhere")
    _collector_metrics_dir(workers=1)
    assert MULTIPROC_DIR_ENV not in os.environ
