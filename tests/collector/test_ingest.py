"""collector.ingest through the app: ``POST /v1/events`` (server to server) and ``/v1/beacon``."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import msgspec
import pytest
from fakeredis.aioredis import FakeRedis

from relay.config import Settings
from relay.events import MAX_PASSTHROUGH_BYTES
from tests.collector.support import (
    API_KEY,
    BROWSER_UA,
    ORIGIN,
    PIXEL,
    RESTRICTED_KEY,
    SECOND_PIXEL,
    VISITOR_IP,
    everything_in,
    inbox,
    sha256,
)

AUTH = {"authorization": f"Bearer {API_KEY}"}
EMAIL = "Jane.Doe@Example.COM"
PHONE = "+1 (650) 555-1212"


def purchase(**fields: Any) -> dict[str, Any]:
    """A valid Purchase for PIXEL; ``fields`` replace or add top-level keys."""
    return {
        "event_name": "Purchase",
        "event_time": int(time.time()) - 60,
        "event_id": "order-1001",
        "pixel_id": PIXEL,
        "event_source_url": "https://shop.example/checkout/done",
        "user_data": {"em": EMAIL, "ph": PHONE, "client_user_agent": BROWSER_UA},
        "custom_data": {"value": 42.5, "currency": "EUR"},
        **fields,
    }


async def post_events(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await client.post("/v1/events", json=body, headers={**AUTH, **headers})


def error_of(response: httpx.Response) -> str:
    message: str = response.json()["error"]
    return message


# -- POST /v1/events: authentication ------------------------------------------------------------


async def test_events_without_an_api_key_are_unauthorized(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", json=purchase())

    assert (401, "application/json") == (response.status_code,
                                         response.headers["content-type"])
    assert "Authorization: Bearer" in error_of(response)


@pytest.mark.parametrize("authorization", ["Bearer wrong-key", "Basic dXNlcjpwdw==", "Bearer ",
                                           API_KEY])
async def test_events_with_a_bad_api_key_are_unauthorized(client: httpx.AsyncClient,
                                                          authorization: str) -> None:
    response = await post_events(client, purchase(), authorization=authorization)

    assert 401 == response.status_code
    assert error_of(response).endswith(("is not valid", "<key>'"))


# -- POST /v1/events: validation ----------------------------------------------------------------


async def test_malformed_json_is_a_bad_request(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", content=b'{"event_name": ', headers=AUTH)

    assert 400 == response.status_code
    assert "not valid JSON" in error_of(response)


async def test_an_empty_body_is_a_bad_request(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", content=b"", headers=AUTH)

    assert (400, "the request body is empty: send events as JSON") == (
        response.status_code, error_of(response)
    )


async def test_a_wrong_type_names_the_field_path(client: httpx.AsyncClient) -> None:
    events = [purchase(), purchase(user_data={"em": 12345})]

    response = await post_events(client, events)

    assert 422 == response.status_code
    assert "events[1].user_data.em" in error_of(response)


async def test_a_wrong_type_in_a_single_event_names_the_field(client: httpx.AsyncClient) -> None:
    response = await post_events(client, purchase(event_name=7))

    assert 422 == response.status_code
    assert "event.event_name" in error_of(response)


async def test_an_unknown_field_is_refused(client: httpx.AsyncClient) -> None:
    response = await post_events(client, purchase(email=EMAIL))

    assert (422, True) == (response.status_code, "email" in error_of(response))


async def test_an_event_time_in_milliseconds_is_refused(client: httpx.AsyncClient) -> None:
    response = await post_events(client, purchase(event_time=int(time.time() * 1000)))

    assert (422, "event.event_time must be Unix seconds, not milliseconds") == (
        response.status_code, error_of(response)
    )


async def test_an_event_older_than_seven_days_is_refused(client: httpx.AsyncClient) -> None:
    eight_days_ago = int(time.time()) - 8 * 86_400

    response = await post_events(client, [purchase(), purchase(event_time=eight_days_ago)])

    assert (422, "events[1].event_time is (almost) older than 7 days") == (
        response.status_code, error_of(response)
    )


async def test_an_event_far_in_the_future_is_refused(client: httpx.AsyncClient) -> None:
    response = await post_events(client, purchase(event_time=int(time.time()) + 86_400))

    assert (422, "event.event_time is in the future") == (response.status_code,
                                                           error_of(response))


async def test_a_malformed_fbc_is_refused(client: httpx.AsyncClient) -> None:
    event = purchase(user_data={"em": EMAIL, "fbc": "IwAR2F4-dbP0",
                                "client_user_agent": BROWSER_UA})

    response = await post_events(client, event)

    assert (422, True) == (response.status_code, "event.user_data.fbc" in error_of(response))


async def test_more_than_1000_events_is_too_large(client: httpx.AsyncClient) -> None:
    response = await post_events(client, [{"event_name": "Purchase"}] * 1001)

    assert (413, "a request holds at most 1000 events, this one has 1001") == (
        response.status_code, error_of(response)
    )


async def test_a_body_over_max_body_bytes_is_too_large(client: httpx.AsyncClient,
                                                       settings: Settings,
                                                       redis: FakeRedis) -> None:
    padding = "x" * settings.collector.max_body_bytes

    response = await post_events(client, purchase(custom_data={"note": padding}))

    assert (413, []) == (response.status_code, await redis.keys("*"))
    assert str(settings.collector.max_body_bytes) in error_of(response)


async def test_a_pixel_not_allowed_for_the_key_is_forbidden(client: httpx.AsyncClient) -> None:
    response = await post_events(client, purchase(pixel_id=SECOND_PIXEL),
                                 authorization=f"Bearer {RESTRICTED_KEY}")

    assert (403, f"event.pixel_id {SECOND_PIXEL} is not allowed for this API key") == (
        response.status_code, error_of(response)
    )


async def test_an_unknown_pixel_is_refused(client: httpx.AsyncClient) -> None:
    response = await post_events(client, purchase(pixel_id="99999999"))

    assert (422, "event.pixel_id 99999999 is not a configured pixel") == (
        response.status_code, error_of(response)
    )


async def test_an_empty_list_is_refused(client: httpx.AsyncClient) -> None:
    response = await post_events(client, [])

    assert (422, "the request holds no event") == (response.status_code, error_of(response))


async def test_a_refused_batch_stores_nothing(client: httpx.AsyncClient,
                                              redis: FakeRedis) -> None:
    await post_events(client, [purchase(), purchase(event_time=1)])

    assert [] == await redis.keys("*")


# -- POST /v1/events: accepted ------------------------------------------------------------------


async def test_a_single_event_is_accepted_with_its_id(client: httpx.AsyncClient,
                                                      redis: FakeRedis) -> None:
    response = await post_events(client, purchase())

    assert (202, {"accepted": 1, "event_ids": ["order-1001"]}) == (response.status_code,
                                                                    response.json())
    assert ["order-1001"] == [e.event.event_id for e in await inbox(redis, "relay_high", PIXEL)]


async def test_a_list_of_events_is_accepted_in_order(client: httpx.AsyncClient) -> None:
    response = await post_events(client, [purchase(event_id="a"), purchase(event_id="b")])

    assert (202, ["a", "b"]) == (response.status_code, response.json()["event_ids"])


async def test_an_event_without_an_id_gets_one(client: httpx.AsyncClient,
                                               redis: FakeRedis) -> None:
    event = purchase()
    del event["event_id"]

    response = await post_events(client, event)

    stored = await inbox(redis, "relay_high", PIXEL)
    assert response.json()["event_ids"] == [e.event.event_id for e in stored]


async def test_an_event_without_a_pixel_goes_to_every_pixel_of_the_key(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    event = purchase()
    del event["pixel_id"]

    await post_events(client, event)

    assert (["order-1001"], ["order-1001"]) == (
        [e.event.event_id for e in await inbox(redis, "relay_high", PIXEL)],
        [e.event.event_id for e in await inbox(redis, "relay_high", SECOND_PIXEL)],
    )


async def test_raw_email_and_phone_are_never_stored(client: httpx.AsyncClient,
                                                    redis: FakeRedis) -> None:
    await post_events(client, purchase())

    everything = (await everything_in(redis)).lower()
    for raw in (EMAIL, "jane.doe@example.com", PHONE, "6505551212", "16505551212"):
        assert raw.lower().encode() not in everything, raw


async def test_email_and_phone_are_stored_as_sha256_of_the_normalized_values(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    await post_events(client, purchase())

    [stored] = await inbox(redis, "relay_high", PIXEL)
    assert (sha256("jane.doe@example.com"), sha256("16505551212")) == (
        stored.event.user_data.em, stored.event.user_data.ph
    )


async def test_an_already_hashed_email_is_passed_through(client: httpx.AsyncClient,
                                                         redis: FakeRedis) -> None:
    hashed = sha256("jane.doe@example.com")

    await post_events(client, purchase(user_data={"em": hashed.upper(),
                                                  "client_user_agent": BROWSER_UA}))

    [stored] = await inbox(redis, "relay_high", PIXEL)
    assert hashed == stored.event.user_data.em


@pytest.mark.parametrize(
    ("event_name", "queue"),
    [("Purchase", "relay_high"), ("Lead", "relay_high"), ("AddToCart", "relay_normal"),
     ("ViewContent", "relay_normal"), ("PageView", "relay_low")],
)
async def test_an_event_goes_to_the_inbox_of_its_priority(client: httpx.AsyncClient,
                                                          redis: FakeRedis, event_name: str,
                                                          queue: str) -> None:
    await post_events(client, purchase(event_name=event_name))

    assert [b"pixelrelay:inbox:" + queue.encode() + b":" + PIXEL.encode()] == sorted(
        await redis.keys("pixelrelay:inbox:*:*")
    )


async def test_accepted_events_are_recorded_for_the_audit(client: httpx.AsyncClient,
                                                          redis: FakeRedis) -> None:
    await post_events(client, purchase())

    [bucket] = await redis.keys("pixelrelay:ev:*")
    assert [b"Purchase:order-1001"] == list(await redis.hkeys(bucket))
    assert f"{{{PIXEL}}}" in bucket.decode()


async def test_a_click_id_travels_with_the_event(client: httpx.AsyncClient,
                                                 redis: FakeRedis) -> None:
    await post_events(client, purchase(click_id="click-123", user_data=None))

    [stored] = await inbox(redis, "relay_high", PIXEL)
    assert "click-123" == stored.click_id


# -- POST /v1/beacon ----------------------------------------------------------------------------

FBC = "fb.1.1780000000000.IwAR2F4-dbP0"
FBP = "fb.1.1780000000000.1234567890"


def beacon(**fields: Any) -> dict[str, Any]:
    return {"pixel_id": PIXEL, "event_name": "AddToCart", "event_id": "b-1",
            "event_source_url": "https://shop.example/p/42",
            "custom_data": {"value": 9.5, "currency": "EUR"}, **fields}


async def send_beacon(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await client.post(
        "/v1/beacon", content=json.dumps(body).encode(),
        headers={"origin": ORIGIN, "user-agent": BROWSER_UA, "content-type": "text/plain",
                 **headers},
    )


async def test_a_beacon_from_an_allowed_origin_is_accepted_with_cors_headers(
        client: httpx.AsyncClient) -> None:
    response = await send_beacon(client, beacon())

    assert (204, ORIGIN, "true") == (
        response.status_code, response.headers["access-control-allow-origin"],
        response.headers["access-control-allow-credentials"],
    )


async def test_a_beacon_carries_the_visitors_address_agent_cookies_and_click(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    await send_beacon(client, beacon(), cookie=f"_fbc={FBC}; _fbp={FBP}; _prclk=click-9")

    [stored] = await inbox(redis, "relay_normal", PIXEL)
    user = stored.event.user_data
    assert (VISITOR_IP, BROWSER_UA, FBC, FBP) == (
        user.client_ip_address, user.client_user_agent, user.fbc, user.fbp
    )
    assert ("beacon", "click-9", "b-1", "website") == (
        stored.source, stored.click_id, stored.event.event_id, stored.event.action_source
    )


async def test_a_beacon_from_a_headless_browser_is_answered_but_not_stored(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    headless = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0"

    response = await send_beacon(client, beacon(), **{"user-agent": headless})

    assert (204, [], ORIGIN) == (response.status_code, await redis.keys("*"),
                                 response.headers["access-control-allow-origin"])
    assert "pixelrelay_collector_bot_clicks_total 1.0" in (await client.get("/metrics")).text


async def test_malformed_cookies_are_left_out_of_a_beacon(client: httpx.AsyncClient,
                                                          redis: FakeRedis) -> None:
    await send_beacon(client, beacon(), cookie="_fbc=garbage; _fbp=fb.1.2.x")

    [stored] = await inbox(redis, "relay_normal", PIXEL)
    assert (None, None) == (stored.event.user_data.fbc, stored.event.user_data.fbp)


async def test_a_beacon_from_another_origin_is_forbidden(client: httpx.AsyncClient,
                                                         redis: FakeRedis) -> None:
    response = await send_beacon(client, beacon(), origin="https://evil.example")

    assert (403, [], "origin https://evil.example may not send beacons: add it to "
                     "collector.allowed_origins") == (
        response.status_code, await redis.keys("*"), error_of(response)
    )


async def test_a_beacon_without_an_origin_is_forbidden(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/beacon", content=json.dumps(beacon()).encode())

    assert (403, True) == (response.status_code, "(none)" in error_of(response))


async def test_a_beacon_without_an_origin_is_judged_by_its_referer(
        client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/beacon", content=json.dumps(beacon()).encode(),
                                 headers={"referer": f"{ORIGIN}/p/42"})

    assert 204 == response.status_code


async def test_a_beacon_with_an_unparsable_referer_is_forbidden(
        client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/beacon", content=json.dumps(beacon()).encode(),
                                 headers={"referer": "http://[::1"})

    assert 403 == response.status_code


async def test_a_cors_preflight_from_an_allowed_origin_is_answered(
        client: httpx.AsyncClient) -> None:
    response = await client.options("/v1/beacon", headers={
        "origin": ORIGIN, "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    })

    assert 204 == response.status_code
    assert (ORIGIN, "true", True, True) == (
        response.headers["access-control-allow-origin"],
        response.headers["access-control-allow-credentials"],
        "POST" in response.headers["access-control-allow-methods"],
        "content-type" in response.headers["access-control-allow-headers"].lower(),
    )


async def test_a_cors_preflight_from_another_origin_is_not_allowed(
        client: httpx.AsyncClient) -> None:
    response = await client.options("/v1/beacon", headers={
        "origin": "https://evil.example", "access-control-request-method": "POST",
    })

    assert "access-control-allow-origin" not in response.headers
    assert 400 <= response.status_code < 500


async def test_a_beacon_that_is_not_json_is_a_bad_request(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/beacon", content=b"event=AddToCart",
                                 headers={"origin": ORIGIN})

    assert (400, True) == (response.status_code, "not valid JSON" in error_of(response))


async def test_a_beacon_with_a_wrong_type_names_the_field(client: httpx.AsyncClient) -> None:
    response = await send_beacon(client, beacon(event_name=["AddToCart"]))

    assert (422, True) == (response.status_code, "beacon.event_name" in error_of(response))


async def test_a_beacon_for_an_unknown_pixel_is_refused(client: httpx.AsyncClient) -> None:
    response = await send_beacon(client, beacon(pixel_id="99999999"))

    assert (422, "beacon.pixel_id 99999999 is not a configured pixel") == (
        response.status_code, error_of(response)
    )


# -- POST /v1/events: every field of Meta's server event passes through -------------------------

EXTINFO = ["i2", "com.shop.app", "2.1", "2.1.0", "17.4", "iPhone15,2", "en_US", "CET", "",
           "1179", "2556", "3.0", "6", "128", "40", "Europe/Berlin"]


def app_purchase(**fields: Any) -> dict[str, Any]:
    event = purchase(action_source="app", event_source_url=None,
                     user_data={"em": EMAIL, "madid": "38400000-8cf0-11bd-b23e-10b96e40000d",
                                "anon_id": "anon-7"},
                     app_data={"advertiser_tracking_enabled": True,
                               "application_tracking_enabled": True, "extinfo": EXTINFO})
    event.update(fields)
    return event


async def stored_event(redis: FakeRedis) -> dict[str, Any]:
    """The one event stored for PIXEL, as the relay will send it to Meta."""
    [envelope] = await inbox(redis, "relay_high", PIXEL)
    wire: dict[str, Any] = msgspec.to_builtins(envelope.event.wire())
    return wire


async def test_an_app_event_with_app_data_is_stored_with_it(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    response = await post_events(client, app_purchase())

    event = await stored_event(redis)
    assert 202 == response.status_code
    assert (EXTINFO, "38400000-8cf0-11bd-b23e-10b96e40000d", "anon-7") == (
        event["app_data"]["extinfo"], event["user_data"]["madid"], event["user_data"]["anon_id"])


@pytest.mark.parametrize(("change", "field"), [
    ({"app_data": None}, "event.app_data"),
    ({"app_data": {"application_tracking_enabled": True, "extinfo": EXTINFO}},
     "event.app_data.advertiser_tracking_enabled"),
    ({"app_data": {"advertiser_tracking_enabled": True, "application_tracking_enabled": True,
                   "extinfo": EXTINFO[:3]}}, "event.app_data.extinfo"),
])
async def test_an_app_event_without_the_app_data_meta_requires_is_refused(
        client: httpx.AsyncClient, change: dict[str, Any], field: str) -> None:
    response = await post_events(client, app_purchase(**change))

    assert (422, True) == (response.status_code, error_of(response).startswith(field))


async def test_documented_and_unknown_top_level_fields_reach_meta_unchanged(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    extras = {
        "original_event_data": {"event_name": "Purchase", "event_time": int(time.time()) - 600},
        "attribution_data": {"scope": "click", "ad_id": "120200000000"},
        "messaging_channel": "whatsapp",
        "customer_segmentation": {"priority_segment": "high"},
        "a_field_meta_adds_next_year": {"nested": [1, "two", None]},
    }

    response = await post_events(client, purchase(**extras))

    event = await stored_event(redis)
    assert 202 == response.status_code
    assert extras == {name: event[name] for name in extras}


async def test_customer_information_outside_user_data_is_refused_not_passed_through(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    response = await post_events(client, purchase(em=EMAIL))

    assert (422, "event.em is customer information: send it inside user_data, where it is "
                 "hashed") == (response.status_code, error_of(response))
    assert b"Jane" not in await everything_in(redis)


async def test_an_unknown_user_data_key_is_refused(client: httpx.AsyncClient) -> None:
    event = purchase()
    event["user_data"]["home_address"] = "1 Main St"

    response = await post_events(client, event)

    assert (422, True) == (response.status_code, "home_address" in error_of(response))


async def test_unknown_fields_over_the_size_limit_are_refused(client: httpx.AsyncClient) -> None:
    response = await post_events(client, purchase(blob="x" * (MAX_PASSTHROUGH_BYTES + 1)))

    assert (422, True) == (response.status_code, "at most 16384" in error_of(response))


async def test_an_events_test_event_code_goes_with_its_envelope_not_into_the_event(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    response = await post_events(client, purchase(test_event_code="TEST77"))

    [envelope] = await inbox(redis, "relay_high", PIXEL)
    assert (202, "TEST77") == (response.status_code, envelope.test_event_code)
    assert "test_event_code" not in await stored_event(redis)


async def test_a_test_event_code_that_is_no_code_is_refused_naming_the_event(
        client: httpx.AsyncClient) -> None:
    response = await post_events(client, [purchase(), purchase(test_event_code=" ")])

    assert (422, True) == (response.status_code,
                           error_of(response).startswith("events[1].test_event_code must be"))
