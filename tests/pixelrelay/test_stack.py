"""pixelrelay.stack: the ports `up` checks before it starts anything."""

from __future__ import annotations

import socket
from pathlib import Path

from pixelrelay.stack import Port, Stack, taken_port_message
from relay.config import RelaySettings, Settings
from tests.support import free_port


def test_free_ports_pass() -> None:
    assert taken_port_message([Port("collector.port", "127.0.0.1", free_port()),
                               Port("dashboard.port", "127.0.0.1", free_port())]) is None


def test_two_settings_on_one_port_are_both_named() -> None:
    port = free_port()

    message = taken_port_message([Port("collector.port", "127.0.0.1", port),
                                  Port("fake_meta.port", "127.0.0.1", port)])

    assert (f"pixelrelay up: collector.port and fake_meta.port are both {port}; "
            "set one of them to another port") == message


def test_a_listening_port_is_named_with_the_setting_that_moves_it() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]

        message = taken_port_message([Port("dashboard.port", "127.0.0.1", free_port()),
                                      Port("redis.embedded_port", "127.0.0.1", port)])

    assert (f"pixelrelay up: port {port} on 127.0.0.1 is already in use; stop what listens "
            "there or set redis.embedded_port to a free port") == message


def test_a_port_left_in_time_wait_counts_as_free() -> None:
    # Given the stack's last run (servers set SO_REUSEADDR, as granian does) closed a
    # connection itself, which leaves that port in TIME_WAIT for a minute
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()
        client.close()

    assert taken_port_message([Port("collector.port", "127.0.0.1", port)]) is None


def test_up_checks_each_relay_workers_metrics_port_too(tmp_path: Path) -> None:
    settings = Settings(relay=RelaySettings(metrics_port=19320))

    ports = {p.port: p for p in Stack(settings, tmp_path / "config.toml").ports()}
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 19322))
        squatter.listen()
        message = taken_port_message(list(ports.values()))

    assert {19320, 19321, 19322} <= set(ports)
    assert ("pixelrelay up: port 19322 on 127.0.0.1 is already in use; stop what listens there "
            "or set relay.metrics_port to a free port (the low queue's relay worker serves "
            "/metrics on it + 2; 0 turns /metrics off)") == message


def test_no_metrics_port_is_checked_when_metrics_are_off(tmp_path: Path) -> None:
    settings = Settings(relay=RelaySettings(metrics_port=0))

    settings_named = {p.setting for p in Stack(settings, tmp_path / "config.toml").ports()}

    assert "relay.metrics_port" not in settings_named
