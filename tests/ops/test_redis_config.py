"""ops/systemd/redis-pixelrelay.conf: a Redis server started with it keeps events durably."""

from __future__ import annotations

from pathlib import Path

import redis

from relay.redis_server import SERVER_SETTINGS
from tests.support import ROOT, Process, free_port, valkey_binary, wait_for

SNIPPET = ROOT / "ops" / "systemd" / "redis-pixelrelay.conf"


def test_snippet_makes_redis_a_durable_local_queue(tmp_path: Path) -> None:
    # Given a Redis-compatible server whose configuration file is the snippet
    port = free_port()
    server = Process([valkey_binary(), str(SNIPPET), "--port", str(port), "--dir", str(tmp_path)],
                     tmp_path / "server.log").start()
    try:
        client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
        with client:
            wait_for(client.ping, 10, what=f"redis started with {SNIPPET.name}")

            # When asked for its settings
            settings = {key: client.config_get(key)[key]
                        for key in ("appendonly", "appendfsync", "maxmemory-policy", "bind",
                                    "protected-mode", "hash-max-listpack-value")}
    finally:
        server.stop()

    # Then it keeps every write and evicts nothing, on loopback only
    assert {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction",
            "bind": "127.0.0.1", "protected-mode": "yes", "hash-max-listpack-value": "512",
            } == settings, server.output()


def test_the_snippet_and_the_servers_pixelrelay_starts_agree() -> None:
    """ops/systemd's snippet and relay/redis_server.py (the embedded server, tests, benchmarks)
    name the same settings with the same values."""
    snippet = {}
    for line in SNIPPET.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition(" ")
            snippet[name] = value.strip()
    started = dict(zip(SERVER_SETTINGS[::2], SERVER_SETTINGS[1::2], strict=True))

    assert {f"--{k}": v for k, v in snippet.items() if k not in ("bind", "protected-mode")} \
        == {k: v for k, v in started.items() if k != "--save"}
