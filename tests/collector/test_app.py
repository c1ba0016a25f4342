"""collector.app: the small routes, error answers, hostile input, and Redis going away."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
import structlog
from fakeredis import FakeServer
from fakeredis.aioredis import FakeRedis

from collector.app import CONTEXT, _redirect_slug, build_app, build_context, readyz
from collector.spool import Spool
from relay import keys
from relay.config import Settings, load_settings
from relay.events import decode_envelope
from relay.inbox import EventWrite, write_decoder
from tests.collector.support import (
    API_KEY,
    BROWSER_UA,
    ORIGIN,
    PIXEL,
    SECOND_PIXEL,
    VISITOR_IP,
    asgi_client,
    eventually,
    inbox,
    metric_value,
    serving,
)
from tests.support import write_config


def readiness(response: httpx.Response) -> dict[str, Any]:
    """The storage part of /readyz (it may carry more, e.g. the relay's view of the pixels)."""
    body = response.json()
    return {k: body[k] for k in ("ready", "redis", "spool_writable", "spooling")}


# -- small routes -------------------------------------------------------------------------------


async def test_the_script_is_small_javascript_cached_for_an_hour(
        client: httpx.AsyncClient) -> None:
    response = await client.get("/pixelrelay.js")

    assert (200, "application/javascript", "public, max-age=3600") == (
        response.status_code, response.headers["content-type"].split(";")[0],
        response.headers["cache-control"],
    )
    assert len(response.content) < 2048
    assert b"sendBeacon" in response.content


async def test_healthz_answers_alive(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert (200, {"status": "alive"}) == (response.status_code, response.json())


async def test_readyz_is_ready_with_redis_up(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert (200, {"ready": True, "redis": True, "spool_writable": True, "spooling": False}) == (
        response.status_code, readiness(response)
    )


async def test_readyz_names_the_pixels_the_relay_paused(client: httpx.AsyncClient,
                                                         redis: Any) -> None:
    await redis.hset(f"pixelrelay:breaker:{PIXEL}", mapping={
        "state": "open", "reason": "token", "since_ms": 1_700_000_000_000, "code": 190,
        "message": "Error validating access token", "probes": 2, "probe_at_ms": 1})
    await redis.rpush(f"pixelrelay:inbox:relay_high:{PIXEL}", b"x", b"y")

    body = (await client.get("/readyz")).json()

    assert (True, {PIXEL}) == (body["ready"], set(body["paused"]))
    assert {"reason": "token", "since_ms": 1_700_000_000_000, "waiting": 2, "code": 190} == {
        k: body["paused"][PIXEL][k] for k in ("reason", "since_ms", "waiting", "code")}


async def test_metrics_count_requests_by_route_and_status(client: httpx.AsyncClient) -> None:
    await client.get("/go/demo", headers={"user-agent": BROWSER_UA})
    await client.get("/go/nope", headers={"user-agent": BROWSER_UA})

    response = await client.get("/metrics")

    assert (1.0, 1.0) == (
        metric_value(response.text, "pixelrelay_collector_requests_total",
                     route="go", status="302"),
        metric_value(response.text, "pixelrelay_collector_requests_total",
                     route="go", status="404"),
    )


async def test_metrics_count_accepted_events_by_source(client: httpx.AsyncClient) -> None:
    await client.get("/go/demo", headers={"user-agent": BROWSER_UA})

    response = await client.get("/metrics")

    assert 2.0 == metric_value(response.text, "pixelrelay_collector_events_total",
                               source="redirect")


async def test_an_unknown_path_is_a_404_with_a_json_sentence(client: httpx.AsyncClient) -> None:
    response = await client.get("/wp-login.php")

    assert (404, {"error": "there is nothing at this address"}) == (response.status_code,
                                                                     response.json())


@pytest.mark.parametrize(("method", "path"), [("POST", "/healthz"), ("GET", "/v1/events"),
                                              ("PUT", "/v1/beacon"), ("DELETE", "/go/demo")])
async def test_a_wrong_method_is_a_405_with_a_json_sentence(client: httpx.AsyncClient,
                                                            method: str, path: str) -> None:
    response = await client.request(method, path)

    assert (405, {"error": f"{method} is not allowed here"}) == (response.status_code,
                                                                  response.json())


@pytest.mark.parametrize(("method", "path", "slug"), [
    ("GET", "/go/demo", "demo"), ("HEAD", "/go/demo", "demo"), ("GET", "/go/%ff", "%ff"),
    ("POST", "/go/demo", None), ("GET", "/go/", None), ("GET", "/go/demo/x", None),
    ("GET", "/go/demo/", None), ("GET", "/gone", None), ("GET", "/v1/events", None),
])
def test_only_get_or_head_of_one_go_segment_skips_litestar(method: str, path: str,
                                                          slug: str | None) -> None:
    scope: Any = {"type": "http", "method": method, "path": path}

    assert slug == _redirect_slug(scope)


async def test_a_redirect_nothing_can_store_still_redirects_and_counts_the_click_lost(
        client: httpx.AsyncClient, nothing_can_store: None) -> None:
    with structlog.testing.capture_logs() as logs:
        response = await client.get("/go/demo?fbclid=IwAR_full",
                                    headers={"user-agent": BROWSER_UA})

    assert (302, "shop.example") == (response.status_code,
                                     urlsplit(response.headers["location"]).hostname)
    # No click cookie for a click that was not stored; the visitor's own cookies still set
    assert {"_fbc", "_fbp"} == set(response.cookies)
    metrics = (await client.get("/metrics")).text
    assert (1.0, 1.0, 0.0) == (
        metric_value(metrics, "pixelrelay_collector_unrecorded_clicks_total"),
        metric_value(metrics, "pixelrelay_collector_requests_total", route="go", status="302"),
        metric_value(metrics, "pixelrelay_collector_events_total", source="redirect"))
    [lost] = [e for e in logs if e["event"] == "click_not_recorded"]
    assert ("demo", 2, "warning") == (lost["slug"], lost["pixels"], lost["log_level"])


async def test_a_server_event_nothing_can_store_is_a_503_with_retry_after(
        client: httpx.AsyncClient, nothing_can_store: None) -> None:
    response = await client.post("/v1/events", headers={"authorization": f"Bearer {API_KEY}"},
                                 json={"event_name": "Lead",
                                       "event_source_url": "https://shop.example/p",
                                       "user_data": {"em": "a@b.example",
                                                     "client_user_agent": BROWSER_UA}})

    assert (503, "1", {"error": "neither Redis nor the disk spool accepted the event; "
                                "retry shortly"}) == (
        response.status_code, response.headers.get("retry-after"), response.json())
    assert 1.0 == metric_value((await client.get("/metrics")).text,
                               "pixelrelay_collector_requests_total", route="events",
                               status="503")


# -- hostile input: a client error is a 4xx, never a 500 ----------------------------------------

ENDPOINTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "go": ("GET", "/go/demo", {"user-agent": BROWSER_UA}),
    "events": ("POST", "/v1/events", {"authorization": f"Bearer {API_KEY}"}),
    "beacon": ("POST", "/v1/beacon", {"origin": ORIGIN, "user-agent": BROWSER_UA}),
    "script": ("GET", "/pixelrelay.js", {}),
    "readyz": ("GET", "/readyz", {}),
}

HOSTILE: dict[str, dict[str, Any]] = {
    "huge header": {"headers": {"x-padding": "a" * 200_000}},
    "huge user agent": {"headers": {"user-agent": "Mozilla/5.0 " + "A" * 100_000}},
    "huge cookie": {"headers": {"cookie": "_fbc=fb.1.1780000000000." + "x" * 100_000}},
    "non-utf8 headers": {"headers": {
        "user-agent": b"Mozilla/5.0 \xff\xfe", "cookie": b"_fbc=\xff\x80; _fbp=\xc3",
        "referer": b"https://\xff/", "x-forwarded-for": b"\xff", "authorization": b"Bearer \xff",
        "origin": b"https://shop.example\xff",
    }},
    "cookies of garbage": {"headers": {"cookie": '_fbc="; _fbp=;;;=; _prclk=\\"\x7f'}},
    "unparsable referer": {"headers": {"referer": "http://[::1"}},
    "non-utf8 query": {"url_suffix": "?fbclid=%ff%fe&%00=%00&utm_source=%c3%28"},
    "huge fbclid": {"url_suffix": "?fbclid=" + "A" * 50_000},
    "empty body": {"content": b""},
    "non-utf8 body": {"content": b"\xff\xfe\xfd\x00"},
    "deeply nested json": {"content": b"[" * 50_000 + b"]" * 50_000},
    "deeply nested objects": {"content": b'{"a":' * 20_000 + b"1" + b"}" * 20_000},
    "array of non-objects": {"content": b'[1, "two", null, true, [], 3.5]'},
    "json null": {"content": b"null"},
    "json string": {"content": b'"PageView"'},
    "number as event_name": {"content": b'[{"event_name": 12345, "pixel_id": 1}]'},
    "huge numbers": {"content": b'{"event_name": "Purchase", "event_time": 1e999, '
                                b'"custom_data": {"value": 1e999}}'},
    "huge integer": {"content": b'{"event_name": "Purchase", "event_time": ' + b"9" * 400 + b"}"},
    "user_data of wrong shapes": {"content": b'{"event_name": "Purchase", '
                                             b'"user_data": {"em": [1, {"x": 2}], "ph": {}}}'},
    "operator injection": {"content": b'{"pixel_id": {"$ne": null}, "event_name": "x"}'},
    "ten thousand tiny events": {"content": b"[" + b",".join([b'{"event_name":"X"}'] * 10_000)
                                 + b"]"},
    "body over the limit": {"content": b" " * 300_000},
    "form body": {"content": b"event_name=Purchase&em=a%40b.c",
                  "headers": {"content-type": "application/x-www-form-urlencoded"}},
}


@pytest.mark.parametrize("hostile", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("endpoint", ENDPOINTS.values(), ids=ENDPOINTS.keys())
async def test_hostile_input_is_never_a_server_error(
        client: httpx.AsyncClient, endpoint: tuple[str, str, dict[str, str]],
        hostile: dict[str, Any]) -> None:
    method, path, headers = endpoint
    url = path + hostile.get("url_suffix", "")

    response = await client.request(method, url, headers={**headers, **hostile.get("headers", {})},
                                    content=hostile.get("content"))

    assert response.status_code < 500, response.text


@pytest.mark.parametrize("path", ["/go/%ff%fe", "/go/" + "a" * 20_000, "/go/..%2f..%2fhealthz",
                                  "/go/demo%00", "/go/", "/v1/events/../healthz"])
async def test_hostile_paths_are_never_a_server_error(client: httpx.AsyncClient,
                                                      path: str) -> None:
    response = await client.get(path, headers={"user-agent": BROWSER_UA})

    assert response.status_code < 500, response.text


# -- Redis going away ---------------------------------------------------------------------------


LEAD = {"event_name": "Lead", "pixel_id": PIXEL, "event_id": "lead-1",
        "action_source": "system_generated", "user_data": {"external_id": "u-1"}}


def spooled_segments(settings: Settings) -> list[Path]:
    """Every worker directory's segments."""
    return sorted(Path(settings.collector.spool_dir).glob("*/*.spool"))


def spooled_events(settings: Settings) -> list[EventWrite]:
    writes = [write_decoder.decode(record) for segment in spooled_segments(settings)
              for record in Spool.read_segment(segment)]
    return [w for w in writes if isinstance(w, EventWrite)]


async def test_a_click_is_redirected_and_spooled_while_redis_is_down(
        client: httpx.AsyncClient, fake_server: FakeServer, settings: Settings) -> None:
    fake_server.connected = False

    response = await client.get("/go/demo", headers={"user-agent": BROWSER_UA})

    events = spooled_events(settings)
    assert (302, [PIXEL, SECOND_PIXEL]) == (response.status_code, [e.pixel_id for e in events])
    assert {"PageView"} == {decode_envelope(e.payload).event.event_name for e in events}
    metrics = (await client.get("/metrics")).text
    assert "pixelrelay_collector_spooled_events_total 2.0" in metrics  # events, not the click


async def test_server_events_are_accepted_and_spooled_while_redis_is_down(
        client: httpx.AsyncClient, fake_server: FakeServer, settings: Settings) -> None:
    fake_server.connected = False

    response = await client.post("/v1/events", headers={"authorization": f"Bearer {API_KEY}"},
                                 json=LEAD)

    assert (202, ["lead-1"]) == (
        response.status_code, [decode_envelope(e.payload).event.event_id
                               for e in spooled_events(settings)],
    )


async def test_readyz_is_ready_on_the_spool_while_redis_is_down(
        client: httpx.AsyncClient, fake_server: FakeServer) -> None:
    fake_server.connected = False
    await client.get("/go/demo", headers={"user-agent": BROWSER_UA})

    response = await client.get("/readyz")

    assert (200, {"ready": True, "redis": False, "spool_writable": True, "spooling": True}) == (
        response.status_code, readiness(response)
    )


async def test_metrics_count_spooled_events(client: httpx.AsyncClient,
                                            fake_server: FakeServer) -> None:
    fake_server.connected = False
    await client.post("/v1/events", headers={"authorization": f"Bearer {API_KEY}"},
                      json={**LEAD, "pixel_id": None})

    response = await client.get("/metrics")

    assert (2.0, 1.0) == (
        metric_value(response.text, "pixelrelay_collector_spooled_events_total"),
        metric_value(response.text, "pixelrelay_collector_spooling"),
    )


async def test_spooled_clicks_reach_the_inbox_when_redis_is_back(
        client: httpx.AsyncClient, fake_server: FakeServer, redis: FakeRedis,
        settings: Settings) -> None:
    # Given a click spooled while Redis was down
    fake_server.connected = False
    await client.get("/go/demo", headers={"user-agent": BROWSER_UA})

    # When Redis is back
    fake_server.connected = True

    # Then the probe notices, the spool is replayed into the inbox and removed
    async def in_inbox() -> bool:
        return bool(await inbox(redis, "relay_low", PIXEL))

    await eventually(in_inbox, what="the spooled click in the inbox")
    await eventually(lambda: not spooled_segments(settings), what="the spool to be removed")
    buckets = await redis.keys("pixelrelay:clk:*")
    assert 1 == sum([await redis.hlen(b) for b in buckets])  # one click context


async def test_a_previous_runs_spool_is_replayed_when_the_app_starts(
        settings: Settings) -> None:
    # Given a collector that spooled a click while Redis was down, then stopped
    down = FakeServer()
    down.connected = False
    first = build_app(settings, redis=FakeRedis(server=down))
    async with serving(first), asgi_client(first, VISITOR_IP) as visitor:
        await visitor.get("/go/demo", headers={"user-agent": BROWSER_UA})

    # When the next one starts with Redis up, on the same spool
    up = FakeServer()
    redis = FakeRedis(server=up)
    async with serving(build_app(settings, redis=FakeRedis(server=up))):

        async def in_inbox() -> bool:
            return bool(await inbox(redis, "relay_low", SECOND_PIXEL))

        # Then the click reaches the inbox without waiting for new traffic
        await eventually(in_inbox, what="the last run's click in the inbox")


async def test_an_app_built_from_a_config_file_serves_its_link(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, redis_url="redis://127.0.0.1:9/0"), {})
    app = build_app(settings, redis=FakeRedis(server=FakeServer()))

    async with serving(app), asgi_client(app, VISITOR_IP) as visitor:
        response = await visitor.get("/go/demo", headers={"user-agent": BROWSER_UA})

    assert (302, "shop.example") == (response.status_code,
                                     urlsplit(response.headers["location"]).netloc)


async def test_metrics_report_the_bytes_waiting_in_the_spool(
        client: httpx.AsyncClient, fake_server: FakeServer, settings: Settings) -> None:
    fake_server.connected = False
    await client.get("/go/demo", headers={"user-agent": BROWSER_UA})
    await client.get("/go/demo", headers={"user-agent": BROWSER_UA})

    response = await client.get("/metrics")

    on_disk = sum(p.stat().st_size for p in spooled_segments(settings))
    assert (True, float(on_disk)) == (
        on_disk > 0, metric_value(response.text, "pixelrelay_collector_spool_pending_bytes"))


async def test_a_handler_runs_alone_on_a_context_without_the_app(settings: Settings) -> None:
    # Given a context (no Litestar app, no lifespan) whose Redis holds a pixel's health
    redis = FakeRedis(server=FakeServer())
    await redis.set(keys.pixel_health(PIXEL), b'{"ok": true}')
    ctx = build_context(settings, redis=redis)
    request = SimpleNamespace(app=SimpleNamespace(state={CONTEXT: ctx}))

    # When the readiness handler is called as a plain function
    response = await readyz.fn(request)

    # Then it answers from that context alone
    assert (200, {"ok": True}) == (response.status_code,
                                   msgspec.json.decode(response.content)["pixels"][PIXEL])
