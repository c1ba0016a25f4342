"""Real processes on loopback: a private valkey (AOF), the fake Graph API, `pixelrelay relay`.

``fake_meta(**env)`` starts a fake Meta configured by ``FAKEMETA_*`` variables;
``relay_stack(meta, extra=...)`` writes a config for the test's Redis and that fake and hands
back a ``RelayStack`` that starts worker processes, injects events straight into the inbox (as
the collector's STORE script would) and reads the ledger. Every process is stopped at teardown;
when a test fails, the tail of each process's log is attached to its report.
"""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from redis import Redis

from relay import _dramatiq
from relay.config import RelaySettings
from relay.events import Envelope, MetaEvent, UserData, encode
from relay.inbox import EventWrite, store_sync
from relay.ledger import Ledger
from relay.queues import queue_for
from tests.support import (
    DEMO_PIXEL,
    DEMO_TOKEN,
    VENV_BIN,
    FakeMeta,
    Process,
    RedisServer,
    clean_env,
    free_port,
    wait_for,
    write_config,
)

LEDGER_TTL_S = 7 * 86_400
RELAY_DEFAULTS = RelaySettings()
_processes_key = pytest.StashKey[list[Process]]()
_serial = itertools.count()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_envelope(event_name: str = "PageView", event_id: str | None = None, *,
                  pixel_id: str = DEMO_PIXEL, **fields: Any) -> Envelope:
    """A website event the relay and Meta accept; ``fields`` replace MetaEvent fields."""
    now = time.time()
    event = MetaEvent(
        event_name=event_name,
        event_time=int(now),
        event_id=event_id or f"{event_name.lower()}-{next(_serial)}-{time.time_ns()}",
        action_source="website",
        event_source_url="https://shop.example/p",
        user_data=UserData(em=sha256("someone@example.com"),
                           client_user_agent="Mozilla/5.0 (integration test)",
                           client_ip_address="203.0.113.9"),
    )
    if fields:
        event = msgspec.structs.replace(event, **fields)
    return Envelope(pixel_id=pixel_id, event=event, received_ms=int(now * 1000), source="server")


def inject(client: Redis, envelopes: Sequence[Envelope], chunk: int = 5_000) -> None:
    """Store events in their queue's inbox, exactly as the collector's STORE script does."""
    for start in range(0, len(envelopes), chunk):
        writes = [
            EventWrite(queue_for(e.event.event_name, RELAY_DEFAULTS), e.pixel_id, e.dedup_key,
                       e.received_ms, encode(e))
            for e in envelopes[start:start + chunk]
        ]
        store_sync(client, writes, LEDGER_TTL_S)


@dataclass
class RelayStack:
    """One test's relay: config, Redis, fake Meta, and the worker processes it started."""

    directory: Path
    redis: RedisServer
    meta: FakeMeta
    config: Path
    register: Callable[[Process], None]
    workers: list[Process] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # more token variables for workers

    @property
    def env(self) -> dict[str, str]:
        # Set explicitly so a REDIS_URL or PIXELRELAY_GRAPH_URL in the caller's environment
        # can never point a test worker at a real server.
        return {"PIXELRELAY_TEST_TOKEN": DEMO_TOKEN, **self.tokens, "REDIS_URL": self.redis.url,
                "PIXELRELAY_GRAPH_URL": self.meta.url}

    def client(self) -> Redis:
        return Redis.from_url(self.redis.url, socket_timeout=10)

    def worker(self, queues: str = "high,normal,low", *, wait: bool = True) -> Process:
        """Start ``pixelrelay relay --queues ...``; wait until its consumers run."""
        n = len(self.workers)
        process = CleanProcess(
            [str(VENV_BIN / "pixelrelay"), "relay", "--config", str(self.config),
             "--queues", queues],
            self.directory / f"worker-{n}-{queues.replace(',', '-')}.log", env=self.env,
        ).start()
        self.workers.append(process)
        self.register(process)
        if wait:
            wait_for(lambda: "relay_worker_started" in process.output() or not process.alive(),
                     20, what=f"worker {n} to start")
            assert process.alive(), process.output()[-3000:]
        return process

    def inject(self, envelopes: Sequence[Envelope]) -> None:
        client = self.client()
        try:
            inject(client, envelopes)
        finally:
            client.close()

    def ledger(self) -> Ledger:
        return Ledger(self.client(), LEDGER_TTL_S)

    def states(self, envelopes: Sequence[Envelope]) -> Counter[str]:
        client = self.client()
        ledger = Ledger(client, LEDGER_TTL_S)
        states = [ledger.state(env.dedup_key) for env in envelopes]
        client.close()
        return Counter("none" if s in (None, "accepted") else s for s in states)

    def tool(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``pixelrelay <args> --config ...`` and capture its output."""
        return subprocess.run(
            [str(VENV_BIN / "pixelrelay"), *args[:1], "--config", str(self.config), *args[1:]],
            capture_output=True, text=True, timeout=60,
            env={**_clean_env(), **self.env},
        )

    def unacked(self, queue: str) -> int:
        """Messages fetched by some worker and not yet acked, on ``queue``."""
        client = self.client()
        try:
            return sum(int(client.scard(k))
                       for k in client.scan_iter(_dramatiq.acks_pattern(queue)))
        finally:
            client.close()

    def wait_delivered(self, envelopes: Sequence[Envelope], timeout_s: float = 30.0,
                       pixel_id: str = DEMO_PIXEL) -> Counter[str]:
        """Wait until fake Meta has every one of ``envelopes``; return the id counts."""
        wanted = {e.event.event_id for e in envelopes if e.pixel_id == pixel_id}

        def arrived() -> Counter[str]:
            ids = self.meta.event_ids(pixel_id)
            return ids if wanted <= ids.keys() else Counter()  # empty: keep waiting

        return wait_for(arrived, timeout_s, interval_s=0.1,
                        what=f"{len(wanted)} events to reach fake Meta")


def _clean_env() -> dict[str, str]:
    """The caller's environment without settings that would change what a child does."""
    return clean_env()


class CleanProcess(Process):
    """A ``Process`` that inherits only ``_clean_env()`` plus its own ``env``."""

    def start(self) -> CleanProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd,
                env={**_clean_env(), **self.env}, start_new_session=True,
            )
        return self


@pytest.fixture
def processes(request: pytest.FixtureRequest, redis_server: RedisServer
              ) -> Iterator[Callable[[Process], None]]:
    """Register a process: it is stopped at teardown and its log shown if the test fails.

    Depends on ``redis_server`` so that workers stop before their Redis does.
    """
    started: list[Process] = []
    request.node.stash[_processes_key] = started
    yield started.append
    for process in reversed(started):
        process.stop(timeout_s=20)


@pytest.fixture
def fake_meta(tmp_path: Path, processes: Callable[[Process], None]
              ) -> Callable[..., FakeMeta]:
    """Start a fake Graph API: ``fake_meta(FAKEMETA_LATENCY_MS="200", ...)``."""
    count = itertools.count()

    def start(**env: str) -> FakeMeta:
        port = free_port()
        process = CleanProcess(
            [str(VENV_BIN / "python"), "-m", "fakemeta"],
            tmp_path / f"fakemeta-{next(count)}.log",
            env={"FAKEMETA_PORT": str(port), "FAKEMETA_SEED": "7", **env},
        ).start()
        processes(process)
        meta = FakeMeta(process, port)
        wait_for(lambda: httpx.get(f"{meta.url}/_fake/healthz", timeout=1).status_code == 200
                 or not process.alive(), 20, what="fake Meta to answer")
        assert process.alive(), process.output()[-3000:]
        return meta

    return start


@pytest.fixture
def relay_stack(tmp_path: Path, redis_server: RedisServer,
                processes: Callable[[Process], None]) -> Callable[..., RelayStack]:
    """``relay_stack(meta, extra="...")``: a config for this test's Redis and ``meta``."""

    def build(meta: FakeMeta, extra: str = "") -> RelayStack:
        config = write_config(tmp_path, redis_url=redis_server.url, graph_url=meta.url,
                              extra=extra)
        return RelayStack(tmp_path, redis_server, meta, config, processes)

    return build


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    started = item.stash.get(_processes_key, [])
    if report.when == "call" and report.failed:
        for process in started:
            tail = process.output()[-4000:]
            report.sections.append((f"log of {process.log_path.name}", tail))
    return report
