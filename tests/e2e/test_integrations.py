"""The three ways real users wire pixelrelay up (docs/integrations.md), end to end on real
processes: a private valkey, the fake Graph API, the collector under granian and a relay worker;
the shop page runs in Debian's headless Chromium.

1. an ad link to a Telegram bot whose backend posts the Lead and the Purchase with the click id;
2. a shop page with Meta's pixel and pixelrelay.js, and the server's Purchase with the same
   event_id;
3. an integration on Meta's official SDK switched by its base URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from facebook_business.adobjects.adspixel import AdsPixel
from playwright.sync_api import Browser, Request

from tests.meta_sdk import (
    ActionSource,
    Event,
    EventRequest,
    FacebookRequestError,
    UserData,
    sdk_api,
)
from tests.meta_sdk import purchase as sdk_purchase
from tests.support import (
    DEMO_API_KEY,
    DEMO_PIXEL,
    DEMO_TOKEN,
    VENV_BIN,
    Process,
    RedisServer,
    free_port,
    wait_for,
    wait_http,
    write_config,
)

BOT = "pixelrelay_shop_bot"
SIGNED_KEY, SIGNED_SECRET = "signed-integration-key", "the-shops-app-secret"
CONSENT_PIXEL = "5550001112"  # requires the visitor's consent
TELEGRAM_START = re.compile(r"[A-Za-z0-9_-]{1,64}")  # Telegram's deep-link start parameter
UA = "Mozilla/5.0 (X11; Linux x86_64) integration-recipes"
AUTH = {"authorization": f"Bearer {DEMO_API_KEY}"}
FBQ_STUB = """<script>
  window.fbqCalls = [];
  window.fbq = function () { window.fbqCalls.push(Array.prototype.slice.call(arguments)); };
</script>"""


@dataclass
class Stack:
    collector: str
    meta: str
    shop: str
    processes: list[Process]

    def logs(self) -> str:
        """Everything the fake Meta, the collector and the relay have logged so far."""
        return "\n".join(p.output() for p in self.processes)

    def meta_events(self, event_name: str) -> list[dict[str, Any]]:
        events = httpx.get(f"{self.meta}/_fake/events", params={"pixel_id": DEMO_PIXEL},
                           timeout=10).json()["events"]
        return [e for e in events if e["event_name"] == event_name]

    def events_by_test_code(self) -> dict[str, list[str]]:
        """Event ids fake Meta received with each test_event_code."""
        found: dict[str, list[str]] = httpx.get(
            f"{self.meta}/_fake/events", params={"pixel_id": DEMO_PIXEL},
            timeout=10).json()["test_events"]
        return found

    def delivered(self, event_name: str, event_id: str) -> dict[str, Any]:
        """Wait until fake Meta has that event; return it as Meta received it."""
        def arrived() -> dict[str, Any] | None:
            found = [e for e in self.meta_events(event_name) if e.get("event_id") == event_id]
            return found[0] if found else None

        event: dict[str, Any] = wait_for(arrived, 30, interval_s=0.1,
                                         what=f"{event_name} {event_id} at fake Meta")
        return event


def _shop_server(collector: str) -> tuple[ThreadingHTTPServer, int]:
    """The shop: a landing page with Meta's pixel (a stub fbq) and pixelrelay.js."""
    page = (f"<!doctype html><html><head>{FBQ_STUB}"
            f'<script src="{collector}/pixelrelay.js" data-pixel="{DEMO_PIXEL}"></script>'
            "</head><body>shop</body></html>").encode()

    class Landing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Landing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("recipes")
    redis = RedisServer(tmp / "redis").start()
    meta_port, collector_port = free_port(), free_port()
    meta, collector = f"http://127.0.0.1:{meta_port}", f"http://127.0.0.1:{collector_port}"
    shop, shop_port = _shop_server(collector)
    shop_url = f"http://127.0.0.1:{shop_port}"
    config = write_config(tmp, redis_url=redis.url, graph_url=meta,
                          collector_port=collector_port, extra=f"""
[[links]]
slug = "tg"
destination = "https://t.me/{BOT}?start={{click_id}}"
pixels = ["{DEMO_PIXEL}"]

[[links]]
slug = "shop"
destination = "{shop_url}/landing?cid={{click_id}}"
pixels = ["{DEMO_PIXEL}"]

[[pixels]]
id = "{CONSENT_PIXEL}"
access_token_env = "PIXELRELAY_TEST_TOKEN"
require_consent = true

[[api_keys]]
name = "signed"
sha256 = "{hashlib.sha256(SIGNED_KEY.encode()).hexdigest()}"
app_secret_env = "SHOP_APP_SECRET"
require_appsecret_proof = true
""")
    config.write_text(config.read_text().replace(
        'allowed_origins = ["https://shop.example"]', f'allowed_origins = ["{shop_url}"]'))
    env = {"PIXELRELAY_TEST_TOKEN": DEMO_TOKEN, "SHOP_APP_SECRET": SIGNED_SECRET,
           "REDIS_URL": redis.url,
           "PIXELRELAY_GRAPH_URL": meta, "FAKEMETA_PORT": str(meta_port)}
    processes = [
        Process([sys.executable, "-m", "fakemeta"], tmp / "fakemeta.log", env=env).start(),
        Process([sys.executable, "-m", "pixelrelay", "collector", "--config", str(config)],
                tmp / "collector.log", env=env).start(),
        Process([str(VENV_BIN / "pixelrelay"), "relay", "--config", str(config)],
                tmp / "relay.log", env=env).start(),
    ]
    try:
        wait_http(f"{meta}/_fake/healthz")
        wait_http(f"{collector}/healthz")
        wait_for(lambda: "relay_worker_started" in processes[2].output(), 30, what="the relay")
        yield Stack(collector=collector, meta=meta, shop=shop_url, processes=processes)
    finally:
        for process in reversed(processes):
            process.stop()
        shop.shutdown()
        shop.server_close()
        redis.stop()


# -- 1. a Telegram bot -----------------------------------------------------------------------------
def test_a_telegram_bot_links_lead_and_purchase_to_the_ad_click(stack: Stack) -> None:
    # Given a visitor who clicks the ad link and lands in the bot
    click = httpx.get(f"{stack.collector}/go/tg", params={"fbclid": "IwAR_tg-Recipe.1"},
                      headers={"user-agent": UA}, timeout=10)
    location = urlsplit(click.headers["location"])
    [click_id] = parse_qs(location.query)["start"]
    assert (302, "t.me", f"/{BOT}") == (click.status_code, location.netloc, location.path)
    assert TELEGRAM_START.fullmatch(click_id), "Telegram would drop this start parameter"

    # When the bot's backend, told the click id by /start, posts the Lead and the Purchase
    events = [
        {"event_name": "Lead", "event_id": f"tg-lead-{click_id}", "action_source": "chat",
         "click_id": click_id, "user_data": {"external_id": "telegram-user-42"}},
        {"event_name": "Purchase", "event_id": f"tg-order-{click_id}", "action_source": "chat",
         "click_id": click_id, "user_data": {"external_id": "telegram-user-42"},
         "custom_data": {"value": 19.0, "currency": "EUR"}},
    ]
    stored = httpx.post(f"{stack.collector}/v1/events", json=events, headers=AUTH, timeout=10)
    assert 202 == stored.status_code, stored.text

    # Then both reach Meta with the click's fbc, fbp, IP and user agent
    for name, event_id in (("Lead", f"tg-lead-{click_id}"), ("Purchase", f"tg-order-{click_id}")):
        user = stack.delivered(name, event_id)["user_data"]
        assert (True, True, "127.0.0.1", UA) == (
            user["fbc"].endswith(".IwAR_tg-Recipe.1"), user["fbp"].startswith("fb.1."),
            user["client_ip_address"], user["client_user_agent"]), user


# -- 2. a shop page with Meta's pixel and pixelrelay.js --------------------------------------------
def _is_beacon(request: Request) -> bool:
    return request.url.endswith("/v1/beacon") and request.method == "POST"


def test_the_shop_page_and_the_server_send_one_purchase_meta_can_deduplicate(
        stack: Stack, browser: Browser) -> None:
    context = browser.new_context(user_agent=UA)
    page = context.new_page()
    try:
        # Given a visitor who came through the ad link to the shop's landing page
        page.goto(f"{stack.collector}/go/shop?fbclid=IwAR_shop-Recipe")
        assert page.url.startswith(f"{stack.shop}/landing?cid=")
        page.wait_for_function("typeof window.pixelrelay === 'object'")
        cookies = {c["name"]: c["value"] for c in context.cookies(stack.collector)}

        # When the page tracks the Purchase with the order id, and a custom event
        beacons: list[Request] = []
        with page.expect_request(_is_beacon) as sent:
            page.evaluate("pixelrelay.track('Purchase', {value: 42.5, currency: 'EUR'},"
                          " {eventID: 'order-2001'})")
        beacons.append(sent.value)
        with page.expect_request(_is_beacon) as sent:
            custom_id = page.evaluate("pixelrelay.track('WatchedDemoVideo', {seconds: 30})")
        beacons.append(sent.value)
        fbq_calls = page.evaluate("window.fbqCalls")
        beacon_headers = [b.all_headers() for b in beacons]
        beacon_bodies = [b.post_data_json for b in beacons]
    finally:
        context.close()

    # and the order backend sends its own Purchase with the same event_id
    server_purchase = {"event_name": "Purchase", "event_id": "order-2001",
                       "event_source_url": f"{stack.shop}/checkout",
                       "user_data": {"em": "buyer@example.com", "client_user_agent": UA},
                       "custom_data": {"value": 42.5, "currency": "EUR"}}
    stored = httpx.post(f"{stack.collector}/v1/events", json=server_purchase, headers=AUTH,
                        timeout=10)
    assert 202 == stored.status_code, stored.text

    # Then Meta's pixel and the beacon carry the same eventID, standard and custom apart
    assert [["track", "Purchase", {"value": 42.5, "currency": "EUR"}, {"eventID": "order-2001"}],
            ["trackCustom", "WatchedDemoVideo", {"seconds": 30}, {"eventID": custom_id}]
            ] == fbq_calls
    assert ["order-2001", custom_id] == [b["event_id"] for b in beacon_bodies]
    # the beacons carry the cookies the click set
    for headers in beacon_headers:
        assert f"_fbc={cookies['_fbc']}" in headers["cookie"]
    # and Meta gets one server Purchase (the relay deduplicated its two copies) with the fbc
    purchase = stack.delivered("Purchase", "order-2001")
    assert cookies["_fbc"] == purchase["user_data"]["fbc"]
    stack.delivered("WatchedDemoVideo", custom_id)
    assert 1 == len([e for e in stack.meta_events("Purchase") if e["event_id"] == "order-2001"])


def test_pixelrelay_js_stays_under_two_kilobytes(stack: Stack) -> None:
    script = httpx.get(f"{stack.collector}/pixelrelay.js", timeout=10)

    assert (200, True) == (script.status_code, len(script.content) < 2048), len(script.content)


# -- 3. an existing SDK integration, switched by its base URL --------------------------------------
def test_metas_sdk_pointed_at_the_collector_delivers_through_the_relay(stack: Stack) -> None:
    app_event = Event(event_name="Subscribe", event_time=int(time.time()),
                      event_id="sdk-app-1", action_source=ActionSource.APP,
                      user_data=UserData(email="app-user@example.com",
                                         madid="38400000-8cf0-11bd-b23e-10b96e40000d"))
    app_event_dict = app_event.normalize()
    app_data = {"advertiser_tracking_enabled": 1, "application_tracking_enabled": 1,
                "extinfo": ["a2", "com.shop.app", "1.0", "1.0.0", "14", "Pixel 8", "en_US",
                            "CET", "", "1080", "2400", "2.6", "8", "128", "64",
                            "Europe/Berlin"]}
    assert "app_data" not in app_event_dict

    # the one line an integration changes is the SDK's base URL; its token is an API key
    with sdk_api(stack.collector, DEMO_API_KEY):
        response = EventRequest(pixel_id=DEMO_PIXEL,
                                events=[sdk_purchase("sdk-e2e-1"), sdk_purchase("sdk-e2e-2")]
                                ).execute()
        AdsPixel(DEMO_PIXEL).create_event(fields=[], params={"data": [json.dumps(
            {**app_event_dict, "app_data": app_data})]})
        too_old = sdk_purchase("sdk-e2e-old")
        too_old.event_time = int(time.time()) - 8 * 86_400
        with pytest.raises(FacebookRequestError) as refused:
            EventRequest(pixel_id=DEMO_PIXEL, events=[too_old]).execute()

    assert 2 == response.events_received
    assert (100, 2804003) == (refused.value.api_error_code(), refused.value.api_error_subcode())
    for event_id in ("sdk-e2e-1", "sdk-e2e-2"):
        assert 64 == len(stack.delivered("Purchase", event_id)["user_data"]["em"][0])
    assert app_data == stack.delivered("Subscribe", "sdk-app-1")["app_data"]


def test_the_sdks_test_event_code_reaches_meta_with_its_events_only(stack: Stack) -> None:
    # Given the SDK sending a request with a test_event_code, right after one without; the
    # relay may well batch the three events together
    tested = sdk_purchase("sdk-test-1", f5first="Mary-Jane", dobd="7", doby="1990")
    with sdk_api(stack.collector, DEMO_API_KEY):
        EventRequest(pixel_id=DEMO_PIXEL, events=[tested, sdk_purchase("sdk-test-2")],
                     test_event_code="TEST31337").execute()
        EventRequest(pixel_id=DEMO_PIXEL, events=[sdk_purchase("sdk-live-1")]).execute()

    live = stack.delivered("Purchase", "sdk-live-1")
    arrived = stack.delivered("Purchase", "sdk-test-1")
    stack.delivered("Purchase", "sdk-test-2")
    assert ["sdk-test-1", "sdk-test-2"] == stack.events_by_test_code()["TEST31337"]
    assert "sdk-live-1" not in {i for ids in stack.events_by_test_code().values() for i in ids}
    assert "test_event_code" not in live
    # the older keys the SDK hashed itself arrive as it sent them
    assert {"f5first": hashlib.sha256(b"mary-").hexdigest(),
            "dobd": hashlib.sha256(b"07").hexdigest(),
            "doby": hashlib.sha256(b"1990").hexdigest()} == {
        k: arrived["user_data"][k] for k in ("f5first", "dobd", "doby")}


def test_an_sdk_signing_with_the_app_secret_is_checked_like_meta_checks_it(stack: Stack) -> None:
    with sdk_api(stack.collector, SIGNED_KEY, SIGNED_SECRET):
        accepted = EventRequest(pixel_id=DEMO_PIXEL, events=[sdk_purchase("sdk-signed-1")]
                                ).execute()
    with sdk_api(stack.collector, SIGNED_KEY, "another-apps-secret"), \
            pytest.raises(FacebookRequestError) as wrong:
        EventRequest(pixel_id=DEMO_PIXEL, events=[sdk_purchase("sdk-signed-2")]).execute()
    with sdk_api(stack.collector, SIGNED_KEY), pytest.raises(FacebookRequestError) as missing:
        EventRequest(pixel_id=DEMO_PIXEL, events=[sdk_purchase("sdk-signed-3")]).execute()

    proof = hmac.new(SIGNED_SECRET.encode(), SIGNED_KEY.encode(), hashlib.sha256).hexdigest()
    assert [] == [s for s in (SIGNED_KEY, SIGNED_SECRET, proof) if s in stack.logs()]
    assert 1 == accepted.events_received
    assert (100, 400, "GraphMethodException") == (
        wrong.value.api_error_code(), wrong.value.http_status(), wrong.value.api_error_type())
    assert "appsecret_proof" in missing.value.api_error_message()
    assert 64 == len(stack.delivered("Purchase", "sdk-signed-1")["user_data"]["em"][0])


def test_an_sdk_event_sent_twice_reaches_meta_once(stack: Stack) -> None:
    with sdk_api(stack.collector, DEMO_API_KEY):
        EventRequest(pixel_id=DEMO_PIXEL, events=[sdk_purchase("sdk-twice")]).execute()
        stack.delivered("Purchase", "sdk-twice")
        # the integration retries (a timeout on its side): the same event, with a new one
        again = EventRequest(pixel_id=DEMO_PIXEL, events=[sdk_purchase("sdk-twice"),
                                                          sdk_purchase("sdk-after")]).execute()

    stack.delivered("Purchase", "sdk-after")
    assert 2 == again.events_received  # Meta's answer: both taken; the relay drops the copy
    assert 1 == len([e for e in stack.meta_events("Purchase") if e["event_id"] == "sdk-twice"])


def test_the_sdk_reads_what_consent_withheld_from_metas_messages(stack: Stack) -> None:
    # Given a pixel that requires consent: the SDK's own event says none, a raw one says yes
    agreed = {**sdk_purchase("sdk-consent-yes").normalize(), "consent": True}
    with sdk_api(stack.collector, DEMO_API_KEY):
        answer = EventRequest(pixel_id=CONSENT_PIXEL,
                              events=[sdk_purchase("sdk-consent-unsaid")]).execute()
        stored = AdsPixel(CONSENT_PIXEL).create_event(
            fields=[], params={"data": [json.dumps(agreed)]})

    assert (0, 1) == (answer.events_received, len(answer.messages))
    assert answer.messages[0].startswith(f"1 event withheld: pixel {CONSENT_PIXEL} requires")
    assert (1, []) == (stored["events_received"], stored["messages"])
    wait_for(lambda: httpx.get(f"{stack.meta}/_fake/events", params={"pixel_id": CONSENT_PIXEL},
                               timeout=10).json()["events"], 30, interval_s=0.1,
             what="the consented event at fake Meta")
    events = httpx.get(f"{stack.meta}/_fake/events", params={"pixel_id": CONSENT_PIXEL},
                       timeout=10).json()["events"]
    assert (["sdk-consent-yes"], False) == ([e["event_id"] for e in events],
                                            "consent" in events[0])
