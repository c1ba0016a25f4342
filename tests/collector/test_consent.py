"""Consent at the door: events without it are kept from pixels that require it (counted, never
stored), a denial is kept from every pixel, links can require it for their click, and a
pixel's Limited Data Use default reaches what is stored."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from fakeredis.aioredis import FakeRedis

from collector.app import CollectorApp
from relay import keys
from relay.config import Settings
from relay.ledger import minute_of
from tests.collector.support import (
    API_KEY,
    BROWSER_UA,
    ORIGIN,
    PIXEL,
    SECOND_PIXEL,
    everything_in,
    inbox,
    make_settings,
    metric_value,
)

AUTH = {"authorization": f"Bearer {API_KEY}"}
EMAIL = "jane@example.com"


def purchase(**fields: Any) -> dict[str, Any]:
    return {"event_name": "Purchase", "event_time": int(time.time()) - 60, "event_id": "o-1",
            "pixel_id": PIXEL, "event_source_url": "https://shop.example/done",
            "user_data": {"em": EMAIL, "client_user_agent": BROWSER_UA}, **fields}


def beacon(**fields: Any) -> dict[str, Any]:
    return {"pixel_id": PIXEL, "event_name": "AddToCart", "event_id": "b-1",
            "event_source_url": "https://shop.example/p/42", **fields}


async def send_beacon(client: httpx.AsyncClient, body: dict[str, Any],
                      **headers: str) -> httpx.Response:
    return await client.post("/v1/beacon", content=json.dumps(body).encode(),
                             headers={"origin": ORIGIN, "user-agent": BROWSER_UA,
                                      "content-type": "text/plain", **headers})


def set_cookies(response: httpx.Response) -> list[str]:
    return [h.split("=", 1)[0] for h in response.headers.get_list("set-cookie")]


async def withheld_in_redis(redis: FakeRedis, app: CollectorApp, field: str) -> int:
    await app.ctx.withheld.flush()
    value = await redis.hget(keys.counters(minute_of(time.time_ns() // 1_000_000)), field)
    return int(value or 0)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """PIXEL requires consent and defaults to LDU; SECOND_PIXEL requires nothing."""
    base = make_settings(tmp_path)
    first, second = base.pixels
    return msgspec.structs.replace(base, pixels=[
        msgspec.structs.replace(first, require_consent=True, data_processing_options=["LDU"],
                                data_processing_options_country=1,
                                data_processing_options_state=1000),
        second])


# -- server events --------------------------------------------------------------------------------
async def test_an_event_without_consent_is_withheld_from_a_pixel_that_requires_it(
        client: httpx.AsyncClient, redis: FakeRedis, running_app: CollectorApp) -> None:
    response = await client.post("/v1/events", json=purchase(), headers=AUTH)

    assert (202, {"accepted": 1, "event_ids": ["o-1"], "withheld": 1}) == (
        response.status_code, response.json())
    assert [] == await inbox(redis, "relay_high", PIXEL)
    metrics = (await client.get("/metrics")).text
    assert 1 == metric_value(metrics, "pixelrelay_collector_withheld_events_total",
                             pixel_id=PIXEL, reason="no_consent")
    assert 1 == await withheld_in_redis(redis, running_app, f"withheld:{PIXEL}:Purchase")


async def test_a_withheld_event_leaves_no_personal_data_in_redis(
        client: httpx.AsyncClient, redis: FakeRedis, running_app: CollectorApp) -> None:
    await client.post("/v1/events", json=purchase(), headers=AUTH)
    await running_app.ctx.withheld.flush()

    assert b"o-1" not in await everything_in(redis)


async def test_an_event_with_consent_is_stored_with_the_pixels_ldu_default(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    response = await client.post("/v1/events", json=purchase(consent=True), headers=AUTH)

    assert 202 == response.status_code
    [stored] = await inbox(redis, "relay_high", PIXEL)
    assert (["LDU"], 1, 1000) == (stored.event.data_processing_options,
                                  stored.event.data_processing_options_country,
                                  stored.event.data_processing_options_state)


async def test_the_events_own_processing_options_win_over_the_pixels(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    await client.post("/v1/events", json=purchase(consent=True, data_processing_options=[]),
                      headers=AUTH)

    [stored] = await inbox(redis, "relay_high", PIXEL)
    assert ([], None) == (stored.event.data_processing_options,
                          stored.event.data_processing_options_country)


async def test_a_pixel_that_requires_nothing_gets_the_event_without_consent(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    response = await client.post("/v1/events", json=purchase(pixel_id=SECOND_PIXEL),
                                 headers=AUTH)

    assert {"accepted": 1, "event_ids": ["o-1"]} == response.json()
    [stored] = await inbox(redis, "relay_high", SECOND_PIXEL)
    assert None is stored.event.data_processing_options


async def test_a_denial_is_withheld_from_every_pixel(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    event = purchase(consent=False)
    del event["pixel_id"]

    response = await client.post("/v1/events", json=event, headers=AUTH)

    assert 2 == response.json()["withheld"]
    assert ([], []) == (await inbox(redis, "relay_high", PIXEL),
                        await inbox(redis, "relay_high", SECOND_PIXEL))
    metrics = (await client.get("/metrics")).text
    assert 1 == metric_value(metrics, "pixelrelay_collector_withheld_events_total",
                             pixel_id=SECOND_PIXEL, reason="consent_denied")


# -- beacons --------------------------------------------------------------------------------------
async def test_a_beacon_with_consent_is_stored_and_remembered_in_a_cookie(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    response = await send_beacon(client, beacon(consent=True))

    assert (204, ["_prconsent"]) == (response.status_code, set_cookies(response))
    assert ["b-1"] == [e.event.event_id for e in await inbox(redis, "relay_normal", PIXEL)]


async def test_a_beacon_without_consent_uses_the_remembered_one(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    response = await send_beacon(client, beacon(), cookie="_prconsent=1")

    assert (204, []) == (response.status_code, set_cookies(response))
    assert ["b-1"] == [e.event.event_id for e in await inbox(redis, "relay_normal", PIXEL)]


@pytest.mark.parametrize(("body", "cookie"), [({}, ""), ({}, "_prconsent=0"),
                                              ({"consent": False}, "_prconsent=1")])
async def test_a_beacon_without_consent_is_answered_but_not_stored(
        client: httpx.AsyncClient, redis: FakeRedis, body: dict[str, Any], cookie: str) -> None:
    response = await send_beacon(client, beacon(**body), **({"cookie": cookie} if cookie else {}))

    assert 204 == response.status_code
    assert [] == await inbox(redis, "relay_normal", PIXEL)


# -- redirects ------------------------------------------------------------------------------------
class TestLinkThatRequiresConsent:
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        base = make_settings(tmp_path)
        [link] = base.links
        return msgspec.structs.replace(
            base, links=[msgspec.structs.replace(link, require_consent=True)])

    async def test_without_consent_the_click_is_redirected_and_nothing_kept(
            self, client: httpx.AsyncClient, redis: FakeRedis) -> None:
        response = await client.get("/go/demo?fbclid=IwAR2F4", headers={"user-agent": BROWSER_UA})

        assert (302, []) == (response.status_code, set_cookies(response))
        assert b"" == await everything_in(redis)
        metrics = (await client.get("/metrics")).text
        assert 1 == metric_value(metrics, "pixelrelay_collector_withheld_events_total",
                                 pixel_id=PIXEL, reason="no_consent")

    async def test_with_the_consent_cookie_the_click_is_reported(
            self, client: httpx.AsyncClient, redis: FakeRedis) -> None:
        response = await client.get("/go/demo", headers={"user-agent": BROWSER_UA,
                                                         "cookie": "_prconsent=1"})

        assert 302 == response.status_code
        assert "_prclk" in set_cookies(response)
        assert 1 == len(await inbox(redis, "relay_low", PIXEL))
        assert 1 == len(await inbox(redis, "relay_low", SECOND_PIXEL))


async def test_a_click_without_consent_reaches_only_the_pixels_that_do_not_require_it(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    response = await client.get("/go/demo", headers={"user-agent": BROWSER_UA})

    assert 302 == response.status_code
    assert (0, 1) == (len(await inbox(redis, "relay_low", PIXEL)),
                      len(await inbox(redis, "relay_low", SECOND_PIXEL)))


# -- the Graph endpoint ---------------------------------------------------------------------------
async def test_the_graph_endpoint_says_in_metas_messages_what_consent_withheld(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    # Given three events in the SDK's form shape for PIXEL, which requires consent
    events = [purchase(event_id="agreed", consent=True), purchase(event_id="unsaid"),
              purchase(event_id="refused", consent=False)]
    data = json.dumps([json.dumps({k: v for k, v in e.items() if k != "pixel_id"})
                       for e in events])

    response = await client.post(f"/v26.0/{PIXEL}/events", params={"access_token": API_KEY},
                                 data={"data": data})

    body = response.json()
    assert (200, 1) == (response.status_code, body["events_received"])
    assert 2 == len(body["messages"]) and all(isinstance(m, str) for m in body["messages"])
    assert body["messages"][0].startswith('1 event withheld: the event said "consent": false')
    assert body["messages"][1].startswith(f"1 event withheld: pixel {PIXEL} requires")
    assert ["agreed"] == [e.event.event_id for e in await inbox(redis, "relay_high", PIXEL)]


async def test_the_graph_endpoint_sends_no_messages_when_nothing_was_withheld(
        client: httpx.AsyncClient) -> None:
    event = {k: v for k, v in purchase(consent=True).items() if k != "pixel_id"}

    response = await client.post(f"/v26.0/{PIXEL}/events", params={"access_token": API_KEY},
                                 json={"data": [event]})

    assert (1, []) == (response.json()["events_received"], response.json()["messages"])
