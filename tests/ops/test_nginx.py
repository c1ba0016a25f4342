"""ops/nginx/pixelrelay.conf in front of a real collector: routing, the client address the
collector stores, rate and size limits, probes, the dashboard block and JSON access logs.

Every address in 127.0.0.0/8 reaches the loopback interface, so tests connect from their own
source address: nginx's per-address limits and log lines of one test never mix with another's.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from relay import keys
from relay.clicks import Clicks
from relay.events import decode_envelope
from tests.support import (
    DEMO_API_KEY,
    DEMO_PIXEL,
    ROOT,
    VENV_BIN,
    Process,
    RedisServer,
    free_port,
    wait_for,
    wait_http,
    write_config,
)

SITE = ROOT / "ops" / "nginx" / "pixelrelay.conf"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
MIB = 1_048_576
API_HEADERS = {"authorization": f"Bearer {DEMO_API_KEY}", "content-type": "application/json"}
PURCHASE = {
    "event_name": "Purchase", "pixel_id": DEMO_PIXEL,
    "event_source_url": "https://shop.example/checkout/done",
    "user_data": {"em": "buyer@example.com", "client_user_agent": BROWSER},
    "custom_data": {"currency": "EUR", "value": 12.5},
}
DASHBOARD_PAGE = "stand-in for the pixelrelay dashboard\n"


def nginx_binary() -> str:
    """The nginx executable; its absence fails the test (CI installs it with apt-get)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail("nginx is not installed: the ops tests need it (apt-get install nginx)",
                    pytrace=False)
    return found


@dataclass(frozen=True)
class Ports:
    public: int
    dashboard: int
    collector: int
    dashboard_upstream: int


def render_site(log_dir: Path, ports: Ports | None = None) -> str:
    """The shipped site config with logs under ``log_dir`` and, given ``ports``, loopback ports."""
    replacements = {"/var/log/nginx/": f"{log_dir}/"}
    if ports is not None:
        replacements |= {
            "server 127.0.0.1:8000": f"server 127.0.0.1:{ports.collector}",
            "server 127.0.0.1:8001": f"server 127.0.0.1:{ports.dashboard_upstream}",
            "listen 80;": f"listen 127.0.0.1:{ports.public};",
            "listen [::]:80;": "",
            "listen 127.0.0.1:8081;": f"listen 127.0.0.1:{ports.dashboard};",
        }
    text = SITE.read_text()
    for old, new in replacements.items():
        assert old in text, f"{SITE} no longer contains {old!r}: update render_site with it"
        text = text.replace(old, new)
    return text


def write_nginx_conf(prefix: Path, site_text: str) -> Path:
    """A minimal nginx.conf that includes the site; pid, logs and temp files under ``prefix``."""
    for sub in ("logs", "temp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    site = prefix / "pixelrelay.conf"
    site.write_text(site_text)
    # As root, workers would run as nobody and could not write the temp dirs under tmp_path.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    include {site};
}}
"""
    )
    return conf


def nginx_args(prefix: Path, conf: Path, *extra: str) -> list[str]:
    return [nginx_binary(), "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr", *extra]


def distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def wait_started(process: Process, url: str) -> None:
    try:
        wait_http(url)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- {process.log_path} ---\n{process.output()}") from None


def server_blocks(text: str) -> list[str]:
    """Top-level ``server { ... }`` blocks of the site config, comments removed."""
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    return [m.group(0) for m in re.finditer(r"^server \{.*?^\}", code, re.M | re.S)]


@dataclass
class Stack:
    redis: RedisServer
    ports: Ports
    access_log: Path

    def client(self, address: str = "127.0.0.1", port: int | None = None) -> httpx.Client:
        """An HTTP client to nginx whose connections come from the loopback ``address``."""
        return httpx.Client(
            base_url=f"http://127.0.0.1:{port or self.ports.public}",
            transport=httpx.HTTPTransport(local_address=address),
            headers={"user-agent": BROWSER}, timeout=10,
        )

    def log_entries(self, address: str) -> list[dict[str, Any]]:
        """Access log entries of requests from ``address``; every line must be JSON."""
        if not self.access_log.exists():
            return []
        entries = [json.loads(line) for line in self.access_log.read_text().splitlines()]
        return [e for e in entries if e["remote_addr"] == address]

    def stored_click(self, click_id: str) -> dict[str, Any]:
        with self.redis.client() as redis:
            click = Clicks(redis).get(click_id)
        assert click is not None, f"no click context stored for {click_id}"
        return msgspec.structs.asdict(click)

    def stored_event(self, event_id: str) -> dict[str, Any]:
        with self.redis.client() as redis:
            for key in redis.scan_iter(match=keys.inbox("*", DEMO_PIXEL), _type="list"):
                for raw in redis.lrange(key, 0, -1):
                    envelope = msgspec.to_builtins(decode_envelope(raw))
                    if envelope["event"]["event_id"] == event_id:
                        return dict(envelope)
        raise AssertionError(f"no event {event_id} in the inbox")


@pytest.fixture(scope="module")
def stack(module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Redis, a collector (granian, as `pixelrelay collector` runs it), a stand-in dashboard and
    nginx with the shipped site config, all on free loopback ports."""
    nginx_binary()  # fail before starting anything when nginx is missing
    base = tmp_path_factory.mktemp("nginx-stack")
    ports = Ports(*distinct_free_ports(4))
    config = write_config(base, redis_url=module_redis.url, collector_port=ports.collector)
    (base / "dashboard").mkdir()
    (base / "dashboard" / "index.html").write_text(DASHBOARD_PAGE)
    prefix = base / "nginx"
    conf = write_nginx_conf(prefix, render_site(prefix / "logs", ports))
    collector = Process(
        [str(VENV_BIN / "granian"), "--interface", "asgi", "--factory", "collector.app:create_app",
         "--host", "127.0.0.1", "--port", str(ports.collector), "--workers", "1"],
        base / "collector.log", env={"PIXELRELAY_CONFIG": str(config)},
    )
    dashboard = Process(
        [sys.executable, "-m", "http.server", str(ports.dashboard_upstream), "--bind",
         "127.0.0.1", "--directory", str(base / "dashboard")],
        base / "dashboard.log",
    )
    proxy = Process(nginx_args(prefix, conf, "-g", "daemon off;"), base / "nginx.log")
    processes = [collector, dashboard, proxy]
    try:
        for process in processes:
            process.start()
        wait_started(collector, f"http://127.0.0.1:{ports.collector}/healthz")
        wait_started(dashboard, f"http://127.0.0.1:{ports.dashboard_upstream}/")
        wait_started(proxy, f"http://127.0.0.1:{ports.public}/healthz")
        yield Stack(module_redis, ports, prefix / "logs" / "pixelrelay.access.log")
    finally:
        for process in reversed(processes):
            process.stop()


def test_shipped_config_passes_nginx_configuration_test(tmp_path: Path) -> None:
    # Given the shipped file as is (only its log directory moved) inside a minimal nginx.conf
    conf = write_nginx_conf(tmp_path, render_site(tmp_path / "logs"))

    # When nginx checks it
    result = subprocess.run(nginx_args(tmp_path, conf, "-t"), capture_output=True, text=True,
                            timeout=30, check=False)

    # Then it is valid and nginx has nothing to warn about
    assert 0 == result.returncode, result.stderr
    assert "test is successful" in result.stderr
    assert [] == re.findall(r"\[(?:warn|emerg|alert|crit|error)\].*", result.stderr)


def test_redirect_through_nginx_is_a_302_with_location_and_fbc_cookie(stack: Stack) -> None:
    with stack.client() as client:
        response = client.get("/go/demo", params={"fbclid": "IwAR0nginx"})

    assert 302 == response.status_code
    click_id = response.cookies["_prclk"]
    expected = f"https://shop.example/landing?cid={click_id}&fbclid=IwAR0nginx"
    assert expected == response.headers["location"]
    assert re.fullmatch(r"fb\.1\.\d{13}\.IwAR0nginx", response.cookies["_fbc"])


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.7"])
def test_collector_stores_the_peer_address_not_forged_forwarding_headers(
    stack: Stack, address: str
) -> None:
    # 127.0.0.1 is one of the collector's trusted proxies: appending to the client's
    # X-Forwarded-For instead of overwriting it would make the collector store 6.6.6.6.
    with stack.client(address) as client:
        response = client.get("/go/demo", headers={"x-forwarded-for": "6.6.6.6",
                                                   "x-real-ip": "7.7.7.7"})

    assert 302 == response.status_code
    assert address == stack.stored_click(response.cookies["_prclk"])["client_ip_address"]


def test_a_client_cannot_claim_https_through_nginx(stack: Stack) -> None:
    with stack.client() as client:
        response = client.get("/go/demo", headers={"x-forwarded-proto": "https"})

    set_cookies = response.headers.get_list("set-cookie")
    assert set_cookies
    assert [] == [c for c in set_cookies if "secure" in c.lower()]


def test_beacon_through_nginx_is_stored_with_the_peer_address(stack: Stack) -> None:
    event_id = f"nginx-beacon-{secrets.token_hex(4)}"
    with stack.client("127.0.0.8") as client:
        response = client.post(
            "/v1/beacon",
            json={"pixel_id": DEMO_PIXEL, "event_name": "ViewContent", "event_id": event_id,
                  "event_source_url": "https://shop.example/product/1"},
            headers={"origin": "https://shop.example", "x-forwarded-for": "6.6.6.6"},
        )

    assert 204 == response.status_code
    assert "https://shop.example" == response.headers["access-control-allow-origin"]
    stored = stack.stored_event(event_id)
    assert "127.0.0.8" == stored["event"]["user_data"]["client_ip_address"]


def test_go_answers_429_past_the_burst_for_that_address_only(stack: Stack) -> None:
    burst = int(re.findall(r"zone=pixelrelay_go burst=(\d+)", SITE.read_text())[0])
    flooder, neighbour = "127.0.0.3", "127.0.0.4"

    # When one address clicks as fast as it can
    responses: list[httpx.Response] = []
    with stack.client(flooder) as client:
        while len(responses) < 10 * burst and (not responses or responses[-1].status_code != 429):
            responses.append(client.get("/go/demo"))
        event = client.post("/v1/events", headers=API_HEADERS, json=PURCHASE)

    # Then the first request and the burst pass, and a later one is refused with a sentence
    statuses = [r.status_code for r in responses]
    assert [302] * (burst + 1) == statuses[: burst + 1]
    assert 429 == statuses[-1], f"no 429 after {len(statuses)} requests"
    assert "1" == responses[-1].headers["retry-after"]
    assert "too many requests" in responses[-1].json()["error"]
    # And other addresses, and this address's server-to-server API, are not limited by it
    with stack.client(neighbour) as client:
        assert 302 == client.get("/go/demo").status_code
    assert 202 == event.status_code, event.text


def test_body_over_one_mib_is_refused_by_nginx_before_the_collector(stack: Stack) -> None:
    address = "127.0.0.6"
    with stack.client(address) as client:
        at_limit = client.post("/v1/events", content=b"x" * MIB, headers=API_HEADERS)
        over = client.post("/v1/events", content=b"x" * (MIB + 1), headers=API_HEADERS)

    # Exactly 1 MiB reaches the collector, which finds it is not JSON
    assert 400 == at_limit.status_code, at_limit.text
    assert "not valid JSON" in at_limit.json()["error"]
    # One byte more is nginx's 413, and the collector never sees it
    assert 413 == over.status_code
    assert "larger than 1048576 bytes" in over.json()["error"]

    def both_logged() -> list[dict[str, Any]]:
        entries = stack.log_entries(address)
        return entries if len(entries) == 2 else []

    entries = wait_for(both_logged, what="two access log lines")
    assert [(400, f"127.0.0.1:{stack.ports.collector}"), (413, "")] == [
        (e["status"], e["upstream_addr"]) for e in entries
    ]


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_the_host_itself_only(stack: Stack, path: str) -> None:
    with stack.client("127.0.0.1") as local, stack.client("127.0.0.2") as remote:
        allowed = local.get(path)
        refused = remote.get(path)

    assert 200 == allowed.status_code
    assert 403 == refused.status_code
    assert "only reachable from the host" in refused.json()["error"]


@pytest.mark.parametrize("path", ["/", "/metrics", "/admin", "/go", "/v1", "/.env", "/healthz/x",
                                  "/_openapi/openapi.json"])
def test_unknown_paths_are_404_without_reaching_the_collector(stack: Stack, path: str) -> None:
    address = "127.0.0.9"
    with stack.client(address) as client:
        response = client.get(path)

    assert 404 == response.status_code
    assert "nothing at this address" in response.json()["error"]
    entry = wait_for(
        lambda: [e for e in stack.log_entries(address) if e["uri"] == path][-1:],
        what=f"access log line for {path}",
    )[0]
    assert "" == entry["upstream_addr"]


def test_script_is_cached_publicly_for_an_hour(stack: Stack) -> None:
    with stack.client() as client:
        response = client.get("/pixelrelay.js")

    assert 200 == response.status_code
    assert "javascript" in response.headers["content-type"]
    assert ["public, max-age=3600"] == response.headers.get_list("cache-control")


def test_access_log_is_json_without_query_strings(stack: Stack) -> None:
    address = "127.0.0.10"
    with stack.client(address) as client:
        client.get("/go/demo", params={"fbclid": "SecretClickId", "utm_source": "newsletter"})

    entry = wait_for(lambda: stack.log_entries(address), what="an access log line")[0]
    assert {"time", "remote_addr", "method", "uri", "status", "request_time",
            "upstream_response_time"} <= entry.keys()
    assert ("GET", "/go/demo", 302) == (entry["method"], entry["uri"], entry["status"])
    assert isinstance(entry["request_time"], float)
    assert "SecretClickId" not in stack.access_log.read_text()


def test_dashboard_server_listens_on_loopback_only() -> None:
    blocks = [b for b in server_blocks(SITE.read_text()) if "pixelrelay_dashboard" in b]
    assert 1 == len(blocks)
    listens = re.findall(r"^\s*listen\s+([^;]+);", blocks[0], re.M)
    assert listens
    assert [] == [listen for listen in listens if not listen.startswith("127.0.0.1:")]


def test_dashboard_server_proxies_to_the_dashboard(stack: Stack) -> None:
    with stack.client(port=stack.ports.dashboard) as client:
        response = client.get("/")

    assert 200 == response.status_code
    assert DASHBOARD_PAGE == response.text


def test_collector_down_is_a_503_with_retry_after(tmp_path: Path) -> None:
    # Given nginx whose collector port has nothing listening
    ports = Ports(*distinct_free_ports(4))
    conf = write_nginx_conf(tmp_path, render_site(tmp_path / "logs", ports))
    proxy = Process(nginx_args(tmp_path, conf, "-g", "daemon off;"), tmp_path / "nginx.log")
    try:
        proxy.start()
        wait_started(proxy, f"http://127.0.0.1:{ports.public}/unknown")

        # When an API client posts an event
        response = httpx.post(f"http://127.0.0.1:{ports.public}/v1/events", headers=API_HEADERS,
                              json=PURCHASE, timeout=10)
    finally:
        proxy.stop()

    # Then it is told to come back, in the collector's error format
    assert 503 == response.status_code
    assert "1" == response.headers["retry-after"]
    assert "collector is unavailable" in response.json()["error"]
