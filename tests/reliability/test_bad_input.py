"""Bad input against a live collector (granian, real Redis): every case is answered with a 4xx
and a sentence, never a 5xx or a dropped connection, and the collector keeps serving.

Each class of input is one test; ``RESULTS`` gathers the cases per class for the table that
``test_zz_table`` writes into docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from urllib.parse import urlsplit

import httpx
import pytest

from tests.reliability.conftest import ORIGIN, LiveCollector
from tests.reliability.table import Row, record
from tests.support import DEMO_PIXEL, wait_for

BODY_LIMIT = 1_048_576  # collector.max_body_bytes default
GOOD_EVENT = {"event_name": "Lead", "action_source": "website",
              "event_source_url": "https://shop.example/p",
              "user_data": {"em": "a@b.example", "client_user_agent": "Mozilla/5.0"}}


def has_sentence(response: httpx.Response) -> bool:
    """A JSON ``{"error": "<sentence>"}`` or, for the redirect's 404, a short HTML page."""
    if response.headers.get("content-type", "").startswith("application/json"):
        error = response.json().get("error", "")
        return isinstance(error, str) and len(error.split()) >= 3
    return b"<" in response.content and len(response.content) > 20


def refused(response: httpx.Response) -> bool:
    return 400 <= response.status_code < 500 and has_sentence(response)


def raw(collector: LiveCollector, request: bytes, timeout_s: float = 10) -> bytes:
    """Send bytes as they are (httpx would fix them) and read the answer until close."""
    with socket.create_connection(("127.0.0.1", collector.port), timeout=timeout_s) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"connection: close" not in request.lower():
                break
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def still_serving(collector: LiveCollector) -> bool:
    answer = httpx.post(f"{collector.base}/v1/events", json=GOOD_EVENT, headers=collector.auth,
                        timeout=10)
    return 202 == answer.status_code


def post_events(collector: LiveCollector, content: bytes,
                headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{collector.base}/v1/events", content=content, timeout=30,
                      headers={**collector.auth, "Content-Type": "application/json",
                               **(headers or {})})


# -- bodies ---------------------------------------------------------------------------------------
BODIES = {
    "oversized body": b'{"event_name":"' + b"x" * (BODY_LIMIT + 10) + b'"}',
    "deeply nested arrays": b"[" * 100_000 + b"]" * 100_000,
    "deeply nested objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "invalid UTF-8": b'{"event_name":"Lead\xff\xfe","action_source":"website"}',
    "lone surrogate": b'{"event_name":"\\ud800"}',
    "not JSON": b"event_name=Lead",
    "empty": b"",
    "NaN value": b'{"event_name":"Lead","custom_data":{"value":NaN}}',
    "huge number": b'{"event_name":"Lead","event_time":1' + b"0" * 5000 + b"}",
    "10,000 events": b"[" + b",".join([b'{"event_name":"Lead"}'] * 10_000) + b"]",
    "wrong types": b'{"event_name":["Lead"],"user_data":"x"}',
    "unknown field": b'{"event_name":"Lead","surprise":1}',
    "raw email in a 422": b'{"event_name":"Lead","user_data":{"em":"victim@example.com",'
                          b'"db":"not-a-date"}}',
}


def test_bad_bodies_are_refused_with_a_sentence(live_collector: LiveCollector) -> None:
    answers = {name: post_events(live_collector, body) for name, body in BODIES.items()}

    statuses = {name: a.status_code for name, a in answers.items()}
    record(Row("bad bodies (POST /v1/events)", len(BODIES),
               refused=sum(refused(a) for a in answers.values())))
    assert {name: True for name in BODIES} == {n: refused(a) for n, a in answers.items()}, statuses
    assert "victim@example.com" not in answers["raw email in a 422"].text
    assert still_serving(live_collector)


def test_a_chunked_body_over_the_limit_is_refused(live_collector: LiveCollector) -> None:
    def chunks():  # no Content-Length: the limit must hold while the body streams in
        for _ in range(BODY_LIMIT // 65536 + 2):
            yield b" " * 65536

    answer = httpx.post(f"{live_collector.base}/v1/events", content=chunks(), timeout=30,
                        headers={**live_collector.auth, "Content-Type": "application/json"})

    record(Row("chunked body over the limit", 1, refused=int(refused(answer))))
    assert (413, True) == (answer.status_code, refused(answer))


def test_beacons_from_unconfigured_origins_are_refused(live_collector: LiveCollector) -> None:
    beacon = {"pixel_id": DEMO_PIXEL, "event_name": "ViewContent", "event_id": "b1"}
    origins = ["https://evil.example", "null", "https://shop.example.evil.example",
               "http://shop.example", "https://SHOP.example:443@evil.example"]

    answers = [httpx.post(f"{live_collector.base}/v1/beacon", json=beacon, timeout=10,
                          headers={"Origin": o}) for o in origins]
    answers.append(httpx.post(f"{live_collector.base}/v1/beacon", json=beacon, timeout=10))

    record(Row("beacon origins", len(answers), refused=sum(refused(a) for a in answers)))
    assert [403] * len(answers) == [a.status_code for a in answers]
    assert all(refused(a) for a in answers)
    ok = httpx.post(f"{live_collector.base}/v1/beacon", timeout=10,
                    json={**beacon, "event_source_url": f"{ORIGIN}/p"},
                    headers={"Origin": ORIGIN, "User-Agent": "Mozilla/5.0 (X11; Linux)"})
    assert 204 == ok.status_code


def test_bad_api_keys_are_refused(live_collector: LiveCollector) -> None:
    keys = ["", "Bearer", "Basic dGVzdA==", "Bearer wrong", "Bearer " + "k" * 10_000,
            "bearer test-api-key-but-longer", "Bearer \u00e9"]

    answers = [httpx.post(f"{live_collector.base}/v1/events", json=GOOD_EVENT, timeout=10,
                          headers={b"Authorization": k.encode("utf-8")})
               for k in keys]

    record(Row("API keys", len(keys), refused=sum(refused(a) for a in answers)))
    assert [401] * len(keys) == [a.status_code for a in answers]
    assert all(refused(a) for a in answers)


# -- links ----------------------------------------------------------------------------------------
SLUG_TRICKS = ["/go/..%2f..%2fetc%2fpasswd", "/go/%2e%2e", "/go/demo%00", "/go/demo%2f",
               "/go/DEMO", "/go/demo;x=1", "/go/%64emo%20", "/go/demo/extra", "/go/%ZZ",
               "/go/" + "a" * 5000, "/go/%C0%AE%C0%AE", "/go/demo\\..\\x"]


def test_slug_tricks_are_a_404_page_or_the_links_own_redirect(
        live_collector: LiveCollector) -> None:
    answers = [raw(live_collector, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                   .encode()) for path in SLUG_TRICKS]

    def as_promised(answer: bytes) -> bool:
        head, _, body = answer.partition(b"\r\n\r\n")
        if status_of(answer) == 302:  # /go/demo%2f is /go/demo/: the demo link itself
            return b"\r\nlocation: https://shop.example/landing?" in head.lower()
        return 400 <= status_of(answer) < 500 and (b"<" in body or b'"error"' in body)

    record(Row("slug tricks (GET /go/...)", len(SLUG_TRICKS),
               refused=sum(as_promised(a) for a in answers)))
    assert {p: True for p in SLUG_TRICKS} == {
        p: as_promised(a) for p, a in zip(SLUG_TRICKS, answers, strict=True)}


OPEN_REDIRECTS = ["/go/demo?url=https://evil.example", "/go/demo?next=//evil.example",
                  "/go/demo?@evil.example", "/go/demo?%0d%0aLocation:%20https://evil.example",
                  "/go//evil.example", "/go/https:%2f%2fevil.example", "/go/demo#@evil.example",
                  "/go/demo?cid=x%23@evil.example", "/go/%2fevil.example"]


def test_no_request_redirects_anywhere_but_the_configured_destination(
        live_collector: LiveCollector) -> None:
    answers = [httpx.get(f"{live_collector.base}{path}", timeout=10, follow_redirects=False)
               for path in OPEN_REDIRECTS]

    hosts = {p: urlsplit(a.headers.get("location", "")).netloc or None
             for p, a in zip(OPEN_REDIRECTS, answers, strict=True)}
    record(Row("open-redirect attempts", len(OPEN_REDIRECTS),
               refused=sum(h in (None, "shop.example") for h in hosts.values())))
    assert all(h in (None, "shop.example") for h in hosts.values()), hosts
    assert all(a.status_code in (302, 404) for a in answers)
    assert all("\r" not in v and "\n" not in v for a in answers for v in a.headers.values())


# -- headers, query strings and cookies -----------------------------------------------------------
def test_huge_and_malformed_requests_never_get_a_server_error(
        live_collector: LiveCollector) -> None:
    # Given requests too large or malformed for any client to mean them
    huge_query = "/go/demo?utm_source=" + "q" * 200_000
    cases = {
        "huge query string": f"GET {huge_query} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        "huge header": b"GET /go/demo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * 200_000
                       + b"\r\n\r\n",
        "10,000 headers": b"GET /go/demo HTTP/1.1\r\nHost: x\r\n"
                          + b"".join(b"X-%d: 1\r\n" % i for i in range(10_000)) + b"\r\n",
        "huge cookie": b"GET /go/demo HTTP/1.1\r\nHost: x\r\nCookie: _fbc=" + b"c" * 100_000
                       + b"\r\n\r\n",
        "invalid UTF-8 in the path": b"GET /go/d\xffmo HTTP/1.1\r\nHost: x\r\n\r\n",
        "invalid UTF-8 in the query": b"GET /go/demo?utm_source=\xff\xfe HTTP/1.1\r\nHost: x"
                                      b"\r\n\r\n",
        "not HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n",
        "control character in a cookie": b"GET /go/demo HTTP/1.1\r\nHost: x\r\nCookie: _fbc=a"
                                          b"\x7fb\r\n\r\n",
        "bad Content-Length": b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    }

    # When each is sent as raw bytes
    statuses = {name: status_of(raw(live_collector, req + b"")) for name, req in cases.items()}

    # Then none is a server error: refused (4xx) or, for the redirect, simply redirected
    record(Row("huge or malformed requests", len(cases),
               refused=sum(s == 0 or 300 <= s < 500 for s in statuses.values())))
    assert all(s == 0 or 300 <= s < 500 for s in statuses.values()), statuses
    assert still_serving(live_collector)


MALFORMED_COOKIES = ['_fbc=garbage', '_fbp="unterminated', '_fbc=fb.1.x.y; _fbp=fb.1.2.3',
                     '_fbc=; _fbp=; _prclk=', ';;;==;', '_fbc=fb.1.1790000000000.a"b',
                     '_fbp=' + '9' * 5000, '_fbc=fb.1.1790000000000.ok; _fbc=fb.1.1.dup']


def test_malformed_cookies_still_redirect_with_fresh_valid_cookies(
        live_collector: LiveCollector) -> None:
    answers = [httpx.get(f"{live_collector.base}/go/demo?fbclid=IwAR_fresh", timeout=10,
                         headers={"Cookie": c, "User-Agent": "Mozilla/5.0 (X11; Linux)"})
               for c in MALFORMED_COOKIES]

    record(Row("malformed cookies (redirected)", len(answers),
               refused=sum(a.status_code == 302 for a in answers)))
    assert [302] * len(answers) == [a.status_code for a in answers]
    for answer in answers:
        assert answer.cookies["_fbc"].endswith(".IwAR_fresh")
        assert answer.cookies["_fbp"].startswith("fb.1.")


# -- connections ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_slow_bodies_do_not_hold_up_other_requests(live_collector: LiveCollector) -> None:
    # Given 50 connections that announce a body and then send it a byte at a time
    slow = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", live_collector.port), timeout=30)
        s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer test-api-key\r\nContent-Length: 100000\r\n\r\n[")
        slow.append(s)
    try:
        for _ in range(3):
            for s in slow:
                s.sendall(b" ")
            # Then other clients are served meanwhile
            assert still_serving(live_collector)
            time.sleep(0.2)  # the attack itself is slowness: a pause is its input
    finally:
        for s in slow:
            s.close()
    record(Row("slowloris (50 slow bodies)", 50, refused=50))
    assert still_serving(live_collector)


@pytest.mark.slow
def test_ten_thousand_concurrent_connections_get_answers_not_errors(
        live_collector: LiveCollector) -> None:
    # Given 10,000 connections open at once to one granian worker (loopback only)
    count = 10_000

    async def one(gate: asyncio.Event) -> int:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", live_collector.port)
        except OSError:
            return -1  # refused by the listen backlog: the client retries, nothing broke
        await gate.wait()
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 60)
            return int(line.split(b" ", 2)[1]) if line.startswith(b"HTTP/") else 0
        except (OSError, TimeoutError):
            return 0
        finally:
            writer.close()

    async def burst() -> Counter[int]:
        gate = asyncio.Event()
        tasks = [asyncio.create_task(one(gate)) for _ in range(count)]
        await asyncio.sleep(0)
        gate.set()
        return Counter(await asyncio.gather(*tasks))

    # When each sends a request at the same moment
    statuses = asyncio.run(burst())

    # Then no answer is a server error, and the collector is serving afterwards
    record(Row("10,000 concurrent connections", count, refused=statuses.get(200, 0)))
    assert not any(500 <= s < 600 for s in statuses), statuses
    assert statuses[200] >= count // 2, statuses
    wait_for(lambda: still_serving(live_collector), 30, what="the collector to serve again")
