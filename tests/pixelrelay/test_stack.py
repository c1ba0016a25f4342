"""pixelrelay.stack: the ports `up` checks before it starts anything."""

from __future__ import annotations

import socket

from pixelrelay.stack import Port, taken_port_message
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
