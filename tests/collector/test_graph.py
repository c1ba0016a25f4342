"""``POST /{version}/{pixel_id}/events``: Meta's request shapes in, Meta's answers out.

The access token a client sends is a pixelrelay API key; events are stored like /v1/events
ones (hashed, one envelope per pixel) before the success answer.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
from fakeredis import FakeServer
from fakeredis.aioredis import FakeRedis

from collector.app import build_app
from relay.config import Settings
from tests.collector.support import (
    API_KEY,
    BROWSER_UA,
    PIXEL,
    RESTRICTED_KEY,
    SECOND_PIXEL,
    VISITOR_IP,
    asgi_client,
    inbox,
    metric_value,
    serving,
    sha256,
)

PATH = f"/v26.0/{PIXEL}/events"
TOKEN = {"access_token": API_KEY}
EMAIL = "Jane.Doe@Example.COM"


def purchase(event_id: str = "order-1", **fields: Any) -> dict[str, Any]:
    return {
        "event_name": "Purchase", "event_time": int(time.time()) - 60, "event_id": event_id,
        "action_source": "website", "event_source_url": "https://shop.example/checkout",
        "user_data": {"em": [sha256("jane.doe@example.com")], "client_user_agent": BROWSER_UA},
        "custom_data": {"currency": "EUR", "value": 42.5}, **fields,
    }


def as_json_strings(*events: dict[str, Any]) -> str:
    """``data`` as Meta's SDKs send it: a JSON array of JSON strings."""
    return msgspec.json.encode([msgspec.json.encode(e).decode() for e in events]).decode()


def meta_error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert {"message", "type", "code", "fbtrace_id"} <= error.keys()
    return error


async def stored_ids(redis: FakeRedis, pixel: str = PIXEL) -> list[str]:
    return [e.event.event_id for e in await inbox(redis, "relay_high", pixel)]


async def test_the_sdks_form_body_is_stored_and_answered_like_meta(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    response = await client.post(PATH, params=TOKEN, data={
        "data": as_json_strings(purchase("a"), purchase("b")), "appsecret_proof": "ab" * 32})

    body = response.json()
    assert (200, 2, []) == (response.status_code, body["events_received"], body["messages"])
    assert body["fbtrace_id"]
    assert ["a", "b"] == await stored_ids(redis)
    assert [] == await stored_ids(redis, SECOND_PIXEL)  # the path's pixel only


async def test_a_json_body_with_a_bearer_token_is_accepted(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    response = await client.post(PATH, json={"data": [purchase()]},
                                 headers={"authorization": f"Bearer {API_KEY}"})

    assert (200, ["order-1"]) == (response.status_code, await stored_ids(redis))


async def test_a_multipart_file_part_with_the_token_in_the_body_is_accepted(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    response = await client.post(PATH, data={"access_token": API_KEY}, files={
        "data": ("events.json", msgspec.json.encode([purchase()]), "application/json")})

    assert (200, ["order-1"]) == (response.status_code, await stored_ids(redis))


async def test_raw_customer_data_is_hashed_before_it_is_stored(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    event = purchase(user_data={"em": EMAIL, "client_user_agent": BROWSER_UA})

    await client.post(PATH, params=TOKEN, json={"data": [event]})

    [stored] = await inbox(redis, "relay_high", PIXEL)
    assert [sha256("jane.doe@example.com")] == [stored.event.user_data.em]


@pytest.mark.parametrize(("token", "code"), [(None, 190), ("not-a-key", 190)])
async def test_a_missing_or_unknown_token_is_meta_code_190(
        client: httpx.AsyncClient, token: str | None, code: int) -> None:
    params = {"access_token": token} if token else {}

    response = await client.post(PATH, params=params, json={"data": [purchase()]})

    error = meta_error(response)
    assert (401, code, "OAuthException", False) == (
        response.status_code, error["code"], error["type"], error["is_transient"])


async def test_a_key_not_allowed_for_the_pixel_is_a_permission_error(
        client: httpx.AsyncClient) -> None:
    response = await client.post(f"/v26.0/{SECOND_PIXEL}/events",
                                 params={"access_token": RESTRICTED_KEY},
                                 json={"data": [purchase()]})

    assert (403, 10) == (response.status_code, meta_error(response)["code"])


async def test_a_pixel_this_collector_does_not_relay_is_unknown_object(
        client: httpx.AsyncClient) -> None:
    response = await client.post("/v26.0/999/events", params=TOKEN, json={"data": [purchase()]})

    error = meta_error(response)
    assert (400, 100, 33) == (response.status_code, error["code"], error["error_subcode"])


async def test_a_malformed_version_is_unknown_path(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/latest/{PIXEL}/events", params=TOKEN,
                                 json={"data": [purchase()]})

    assert (400, 2500) == (response.status_code, meta_error(response)["code"])


@pytest.mark.parametrize(("change", "subcode"), [
    ({"event_time": int(time.time()) - 8 * 86_400}, 2804003),
    ({"user_data": {"fbc": "not-an-fbc", "client_user_agent": BROWSER_UA,
                    "em": "jane@example.com"}}, 2804001),
    ({"user_data": {"db": "02/03/1990", "client_user_agent": BROWSER_UA}}, 2804019),
    ({"custom_data": {"currency": "euro"}}, None),
])
async def test_a_broken_rule_is_code_100_with_metas_subcode_and_nothing_is_stored(
        client: httpx.AsyncClient, redis: FakeRedis, change: dict[str, Any],
        subcode: int | None) -> None:
    response = await client.post(PATH, params=TOKEN, data={
        "data": as_json_strings(purchase("fine"), purchase("broken", **change))})

    error = meta_error(response)
    assert (400, 100, subcode) == (response.status_code, error["code"],
                                   error.get("error_subcode"))
    assert error["message"].startswith("data[1].")
    assert [] == await stored_ids(redis)


@pytest.mark.parametrize("data", [None, "not json", '{"a": 1}', '["{not json"]'])
async def test_a_data_parameter_that_is_not_events_is_code_100(
        client: httpx.AsyncClient, data: str | None) -> None:
    form = {"data": data} if data is not None else {"other": "x"}

    response = await client.post(PATH, params=TOKEN, data=form)

    assert (400, 100) == (response.status_code, meta_error(response)["code"])


async def test_nothing_able_to_store_is_a_transient_code_2_with_retry_after(
        client: httpx.AsyncClient, nothing_can_store: None) -> None:
    response = await client.post(PATH, params=TOKEN, json={"data": [purchase()]})

    error = meta_error(response)
    assert (503, "1", 2, True) == (response.status_code, response.headers.get("retry-after"),
                                   error["code"], error["is_transient"])
    assert 1.0 == metric_value((await client.get("/metrics")).text,
                               "pixelrelay_collector_requests_total", route="graph",
                               status="503")


async def test_an_app_event_passes_through_the_graph_endpoint(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    extinfo = ["a2", "com.shop.app", "1.0", "1.0.0", "14", "Pixel 8", "en_US", "CET", "",
               "1080", "2400", "2.6", "8", "128", "64", "Europe/Berlin"]
    event = purchase(action_source="app", event_source_url=None, messaging_channel="whatsapp",
                     app_data={"advertiser_tracking_enabled": 1,
                               "application_tracking_enabled": 1, "extinfo": extinfo})
    del event["event_source_url"]

    response = await client.post(PATH, params=TOKEN, data={"data": as_json_strings(event)})

    [stored] = await inbox(redis, "relay_high", PIXEL)
    assert (200, extinfo, "whatsapp") == (response.status_code, stored.event.app_data["extinfo"],
                                          stored.event.messaging_channel)


# -- appsecret_proof ------------------------------------------------------------------------------
KEY_SECRET, PIXEL_SECRET = "key-app-secret", "pixel-app-secret"
WRONG_PROOF = "Invalid appsecret_proof provided in the API argument"
NO_PROOF = "API calls from the server require an appsecret_proof argument"


def proof_of(token: str, secret: str) -> str:
    """What Meta's SDKs send: HMAC-SHA256 of the access token keyed by the app secret."""
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def with_secrets(settings: Settings, *, key_secret: str = "", require: bool = False,
                 pixel_secret: str = "") -> Settings:
    """The first API key given an app secret (and the proof required), the pixel another."""
    first, *others = settings.api_keys
    keys = [msgspec.structs.replace(first, app_secret=key_secret,
                                    require_appsecret_proof=require), *others]
    pixels = [msgspec.structs.replace(p, app_secret=pixel_secret) if p.id == PIXEL else p
              for p in settings.pixels]
    return msgspec.structs.replace(settings, api_keys=keys, pixels=pixels)


@asynccontextmanager
async def collector_with(settings: Settings, fake_server: FakeServer
                         ) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(settings, redis=FakeRedis(server=fake_server))
    async with serving(app), asgi_client(app, VISITOR_IP) as client:
        yield client


async def post_with_proof(client: httpx.AsyncClient, proof: str | None) -> httpx.Response:
    params = {**TOKEN, **({"appsecret_proof": proof} if proof is not None else {})}
    return await client.post(PATH, params=params, data={"data": as_json_strings(purchase())})


@pytest.mark.parametrize("secret_of", ["key", "pixel"])
async def test_the_right_appsecret_proof_is_accepted(
        settings: Settings, fake_server: FakeServer, redis: FakeRedis, secret_of: str) -> None:
    configured = with_secrets(settings, key_secret=KEY_SECRET if secret_of == "key" else "",
                              pixel_secret=PIXEL_SECRET if secret_of == "pixel" else "")
    secret = KEY_SECRET if secret_of == "key" else PIXEL_SECRET

    async with collector_with(configured, fake_server) as client:
        response = await post_with_proof(client, proof_of(API_KEY, secret).upper())

    assert (200, ["order-1"]) == (response.status_code, await stored_ids(redis))


@pytest.mark.parametrize("secret_of", ["key", "pixel"])
async def test_a_wrong_appsecret_proof_is_refused_as_meta_refuses_it(
        settings: Settings, fake_server: FakeServer, redis: FakeRedis, secret_of: str) -> None:
    # Given a secret on the key or, for a key without one, on the path's pixel
    configured = with_secrets(settings, key_secret=KEY_SECRET if secret_of == "key" else "",
                              pixel_secret=PIXEL_SECRET)

    async with collector_with(configured, fake_server) as client:
        response = await post_with_proof(client, proof_of(API_KEY, "another-apps-secret"))

    error = meta_error(response)
    assert (400, 100, None, "GraphMethodException", WRONG_PROOF) == (
        response.status_code, error["code"], error.get("error_subcode"), error["type"],
        error["message"])
    assert [] == await stored_ids(redis)
    assert not {KEY_SECRET, PIXEL_SECRET} & set(response.text.split('"'))


async def test_a_missing_proof_is_refused_only_for_a_key_that_requires_one(
        settings: Settings, fake_server: FakeServer, redis: FakeRedis) -> None:
    requiring = with_secrets(settings, key_secret=KEY_SECRET, require=True)
    optional = with_secrets(settings, key_secret=KEY_SECRET)

    async with collector_with(requiring, fake_server) as client:
        refused = await post_with_proof(client, None)
    async with collector_with(optional, fake_server) as client:
        accepted = await post_with_proof(client, None)

    error = meta_error(refused)
    assert (400, 100, "GraphMethodException", NO_PROOF) == (
        refused.status_code, error["code"], error["type"], error["message"])
    assert 200 == accepted.status_code


async def test_without_any_app_secret_a_proof_is_accepted_unchecked(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    response = await post_with_proof(client, "0" * 64)

    assert (200, ["order-1"]) == (response.status_code, await stored_ids(redis))


# -- test_event_code ------------------------------------------------------------------------------
async def test_the_requests_test_event_code_is_kept_with_each_of_its_events(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    await client.post(PATH, params=TOKEN, data={"data": as_json_strings(purchase("t")),
                                                "test_event_code": "TEST4242"})
    await client.post(PATH, params=TOKEN, data={"data": as_json_strings(purchase("live"))})

    stored = await inbox(redis, "relay_high", PIXEL)
    assert [("t", "TEST4242"), ("live", None)] == [
        (e.event.event_id, e.test_event_code) for e in stored]
    assert all("test_event_code" not in msgspec.to_builtins(e.event) for e in stored)


@pytest.mark.parametrize("code", [123, " ", "T" * 65, "TEST\n1"])
async def test_a_test_event_code_that_is_no_code_is_refused_with_code_100(
        client: httpx.AsyncClient, redis: FakeRedis, code: object) -> None:
    response = await client.post(PATH, params=TOKEN,
                                 json={"data": [purchase()], "test_event_code": code})

    error = meta_error(response)
    assert (400, 100, True) == (response.status_code, error["code"],
                                error["message"].startswith("test_event_code must be"))
    assert [] == await stored_ids(redis)


async def test_a_method_the_endpoint_does_not_take_is_refused_in_metas_shape(
        client: httpx.AsyncClient) -> None:
    response = await client.get(PATH, params=TOKEN)

    assert (405, 100) == (response.status_code, meta_error(response)["code"])
