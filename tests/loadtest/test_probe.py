"""loadtest/probe.py: the visitor beside locust whose redirect times the verdict judges."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from loadtest.probe import click, percentile


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]

    assert (99.0, 50.0, 100.0, 7.0, 0.0) == (percentile(values, 0.99), percentile(values, 0.5),
                                             percentile(values, 1.0), percentile([7.0], 0.99),
                                             percentile([], 0.99))


class _Answers(BaseHTTPRequestHandler):
    status = 302

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Location", "https://shop.example/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_click_times_a_302_and_refuses_anything_else() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/go/demo?fbclid=x"
    try:
        took = click(url)
        _Answers.status = 200
        refused = click(url)
    finally:
        server.shutdown()
        server.server_close()
        _Answers.status = 302

    assert took is not None and 0 < took < 5000
    assert refused is None
    assert click("http://127.0.0.1:9/go/demo?x=1", timeout_s=1) is None  # nothing listens
