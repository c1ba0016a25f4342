"""The customer data of ``POST /v1/events``: refused at the door when it has no form Meta
documents (422 naming the field, never the value), phones read in the configured region."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from fakeredis.aioredis import FakeRedis

from relay.config import Settings
from tests.collector.support import (
    API_KEY,
    BROWSER_UA,
    PIXEL,
    RESTRICTED_KEY,
    inbox,
    make_settings,
    sha256,
)

AUTH = {"authorization": f"Bearer {API_KEY}"}


def purchase(user_data: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "event_name": "Purchase", "event_time": int(time.time()) - 60, "event_id": "order-1",
        "pixel_id": PIXEL, "event_source_url": "https://shop.example/done",
        "user_data": {"client_user_agent": BROWSER_UA, **user_data}, **fields,
    }


async def stored_user_data(redis: FakeRedis, pixel_id: str = PIXEL) -> dict[str, Any]:
    [envelope] = await inbox(redis, "relay_high", pixel_id)
    return msgspec.to_builtins(envelope.event.user_data)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("em", "john.example.com", "must be an email address"),
        ("em", "n/a", "must be an email address"),
        ("em", "john@", "must be an email address"),
        ("ph", "(650) 555-1212", "must be a phone number with its country code"),
        ("ph", "call me", "must be a phone number with its country code"),
        ("ge", "dog", "must be f or m, or a word for female or male"),
    ],
)
async def test_a_value_with_no_documented_form_is_refused_naming_the_field_not_the_value(
        client: httpx.AsyncClient, redis: FakeRedis, key: str, value: str, expected: str) -> None:
    response = await client.post("/v1/events", json=purchase({key: value}), headers=AUTH)

    assert 422 == response.status_code
    message = response.json()["error"]
    assert message.startswith(f"event.user_data.{key} {expected}")
    assert value not in message
    assert [] == await inbox(redis, "relay_high", PIXEL)


async def posted_and_stored(client: httpx.AsyncClient, redis: FakeRedis,
                            user: dict[str, str]) -> dict[str, object]:
    """Post a Purchase with ``user``; the stored user_data of its keys (202 asserted)."""
    response = await client.post("/v1/events", json=purchase(user), headers=AUTH)
    assert 202 == response.status_code, response.text
    stored = await stored_user_data(redis)
    return {k: stored[k] for k in user}


async def test_combining_marks_and_gender_words_reach_the_inbox_hashed_as_meta_asks(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    user = {"fn": "प्रिया", "ln": "ராஜா", "ct": "กรุงเทพมหานคร", "ge": "mujer",
            "zp": "75\u00a0001", "ph": "+1 650 555 1212 ext. 34"}

    stored = await posted_and_stored(client, redis, user)

    assert {"fn": sha256("प्रिया"), "ln": sha256("ராஜா"), "ct": sha256("กรุงเทพมหานคร"),
            "ge": sha256("f"), "zp": sha256("75001"), "ph": sha256("16505551212")} == stored


async def test_the_older_keys_the_sdk_sends_are_hashed_as_meta_asks(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    user = {"f5first": "Mary-Jane", "f5last": "van der Berg", "fi": "Émile", "dobd": "7",
            "dobm": "03", "doby": "1990"}

    stored = await posted_and_stored(client, redis, user)

    assert {"f5first": sha256("maryj"), "f5last": sha256("van d"), "fi": sha256("é"),
            "dobd": sha256("07"), "dobm": sha256("03"), "doby": sha256("1990")} == stored


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("dobd", "32", "must be a day of the month"), ("dobm", "13", "must be a month"),
    ("doby", "90", "must be a year as YYYY"),
])
async def test_an_older_key_with_no_documented_form_is_refused_naming_it(
        client: httpx.AsyncClient, redis: FakeRedis, key: str, value: str, expected: str) -> None:
    response = await client.post("/v1/events", json=purchase({key: value}), headers=AUTH)

    assert (422, True) == (response.status_code,
                           response.json()["error"].startswith(f"event.user_data.{key} {expected}"))
    assert [] == await inbox(redis, "relay_high", PIXEL)


def _with_regions(settings: Settings, *, key: str = "", pixel: str = "",
                  second_pixel: str = "") -> Settings:
    keys = [msgspec.structs.replace(k, default_phone_region=key) for k in settings.api_keys]
    pixels = [msgspec.structs.replace(p, default_phone_region=region) for p, region in
              zip(settings.pixels, (pixel, second_pixel), strict=True)]
    return msgspec.structs.replace(settings, api_keys=keys, pixels=pixels)


class TestDefaultPhoneRegion:
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        # The shop's key says Brazil; PIXEL says Portugal, SECOND_PIXEL says Spain.
        base = _with_regions(make_settings(tmp_path), pixel="PT", second_pixel="ES")
        shop, partner = base.api_keys
        return msgspec.structs.replace(
            base, api_keys=[msgspec.structs.replace(shop, default_phone_region="BR"), partner])

    async def test_a_number_without_country_code_is_read_in_the_api_keys_region(
            self, client: httpx.AsyncClient, redis: FakeRedis) -> None:
        response = await client.post("/v1/events", json=purchase({"ph": "(11) 98765-4321"}),
                                     headers=AUTH)

        assert 202 == response.status_code
        assert sha256("5511987654321") == (await stored_user_data(redis))["ph"]

    async def test_without_a_key_region_the_pixels_region_is_used(
            self, client: httpx.AsyncClient, redis: FakeRedis) -> None:
        response = await client.post(
            "/v1/events", json=purchase({"ph": "912 345 678"}),
            headers={"authorization": f"Bearer {RESTRICTED_KEY}"})

        assert 202 == response.status_code
        assert sha256("351912345678") == (await stored_user_data(redis))["ph"]

    async def test_the_events_own_country_comes_before_any_default(
            self, client: httpx.AsyncClient, redis: FakeRedis) -> None:
        response = await client.post(
            "/v1/events", json=purchase({"ph": "06 12 34 56 78", "country": "FR"}), headers=AUTH)

        assert 202 == response.status_code
        assert sha256("33612345678") == (await stored_user_data(redis))["ph"]


# -- the event rules at the door: what the relay would dead-letter is a 422 now -------------------
@pytest.mark.parametrize(
    ("user_data", "fields", "message"),
    [
        ({"em": "jane@example.com", "client_user_agent": None}, {},
         "event.user_data.client_user_agent is required for website events"),
        ({"fbp": "fb.1.1700000000000.abc"}, {},
         "event.user_data.fbp is not of the form fb.<index>.<ms>.<random>"),
        ({"zp": "75001", "country": "fr"}, {},
         "event.user_data has too little customer information to match anyone "
         "(client_user_agent, country, zp)"),
        ({"fn": "Jane", "ge": "f", "client_user_agent": None}, {"action_source": "email"},
         "event.user_data has too little customer information to match anyone (fn, ge)"),
        ({"em": "jane@example.com"}, {"data_processing_options": ["GDPR"]},
         "event.data_processing_options may hold only 'LDU' (Limited Data Use), or nothing"),
        ({"em": "jane@example.com"}, {"event_time": int(time.time()) - 7 * 86_400 + 60},
         "event.event_time is (almost) older than 7 days"),
    ],
    ids=["website-without-agent", "bad-fbp", "location-only", "name-and-gender-only",
         "unknown-processing-option", "about-to-expire"],
)
async def test_what_the_relay_would_dead_letter_is_refused_at_the_door(
        client: httpx.AsyncClient, redis: FakeRedis, user_data: dict[str, Any],
        fields: dict[str, Any], message: str) -> None:
    event = purchase({}, **fields)
    event["user_data"] = {k: v for k, v in {**event["user_data"], **user_data}.items()
                          if v is not None}

    response = await client.post("/v1/events", json=event, headers=AUTH)

    assert (422, message) == (response.status_code, response.json()["error"])
    assert [] == await inbox(redis, "relay_high", PIXEL)


async def test_a_website_event_with_a_click_id_may_leave_the_agent_to_the_click(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    event = purchase({}, click_id="c-1")
    event["user_data"] = {"em": "jane@example.com"}

    response = await client.post("/v1/events", json=event, headers=AUTH)

    assert 202 == response.status_code
    assert ["order-1"] == [e.event.event_id for e in await inbox(redis, "relay_high", PIXEL)]
