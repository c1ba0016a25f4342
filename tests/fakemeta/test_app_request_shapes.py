"""Every request shape Meta documents or its SDKs send reaches the same rules.

Meta's Python SDK posts ``application/x-www-form-urlencoded`` with ``data`` holding one JSON
*string* per event; Meta's docs show ``curl -F 'data=[{...}]'`` (multipart, objects); server
tags send JSON bodies. The token may sit in the query, the body or a Bearer header.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import httpx
import msgspec
import pytest

from fakemeta import FakeMetaOptions
from tests.fakemeta.conftest import (
    APP_DATA,
    EVENTS_PATH,
    EXTINFO,
    NOW,
    PIXEL,
    TOKEN,
    ClientFactory,
    error_of,
    make_event,
    sha256,
)

SDK_STYLE = {"User-Agent": "fbbizsdk-python-v26.0.3"}


def json_strings(*events: dict[str, Any]) -> str:
    """``data`` as the SDK sends it: a JSON list of JSON strings."""
    return msgspec.json.encode([msgspec.json.encode(e).decode() for e in events]).decode()


def app_event(**overrides: Any) -> dict[str, Any]:
    event = make_event(action_source="app", event_name="Purchase")
    del event["event_source_url"]
    event["user_data"] = {"madid": "38400000-8cf0-11bd-b23e-10b96e40000d",
                          "em": sha256("jane@example.com"), "client_ip_address": "203.0.113.7"}
    event["app_data"] = APP_DATA
    event.update(overrides)
    return event


async def stored_events(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (
        await client.get("/_fake/events", params={"pixel_id": PIXEL})).json()["events"]
    return events


async def test_form_body_with_events_as_json_strings_is_accepted_as_the_sdk_sends_it(
    client: httpx.AsyncClient,
) -> None:
    first, second = make_event(event_id="a"), make_event(event_id="b")

    response = await client.post(EVENTS_PATH, params=TOKEN, headers=SDK_STYLE,
                                 data={"data": json_strings(first, second)})

    assert (200, 2) == (response.status_code, response.json()["events_received"])
    assert [first, second] == await stored_events(client)


async def test_json_body_with_events_as_json_strings_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    event = make_event()

    response = await client.post(EVENTS_PATH, params=TOKEN,
                                 json={"data": [msgspec.json.encode(event).decode()]})

    assert 200 == response.status_code
    assert [event] == await stored_events(client)


async def test_multipart_data_sent_as_a_file_part_is_accepted(client: httpx.AsyncClient) -> None:
    # curl -F 'data=@events.json'
    data = msgspec.json.encode([make_event()])

    response = await client.post(EVENTS_PATH, params=TOKEN,
                                 files={"data": ("events.json", data, "application/json")})

    assert (200, 1) == (response.status_code, response.json()["events_received"])


async def test_access_token_in_the_form_body_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(EVENTS_PATH, data={"data": json_strings(make_event()),
                                                    "access_token": "good-token"})

    assert 200 == response.status_code


async def test_access_token_in_a_json_body_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(EVENTS_PATH, json={"data": [make_event()],
                                                    "access_token": "good-token"})

    assert 200 == response.status_code


@pytest.mark.parametrize("where", ["query", "form"])
async def test_appsecret_proof_is_checked_wherever_it_is_sent(
    fake_meta: ClientFactory, where: str,
) -> None:
    client = fake_meta(FakeMetaOptions(app_secrets={"good-token": "s3cret"}))
    proof = hmac.new(b"s3cret", b"good-token", hashlib.sha256).hexdigest()
    params = {"access_token": "good-token", "appsecret_proof": proof}
    wrong = {**params, "appsecret_proof": "0" * 64}

    def send(p: dict[str, str]) -> Any:
        form = {"data": json_strings(make_event())}
        if where == "query":
            return client.post(EVENTS_PATH, params=p, data=form)
        return client.post(EVENTS_PATH, data={**form, **p})

    accepted, refused = await send(params), await send(wrong)

    assert (200, 400, 100) == (accepted.status_code, refused.status_code,
                               error_of(refused)["code"])


async def test_a_json_string_that_is_not_an_event_still_gets_code_100(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(EVENTS_PATH, params=TOKEN,
                                 data={"data": msgspec.json.encode(["{not json"]).decode()})

    error = error_of(response)
    assert (400, 100) == (response.status_code, error["code"])
    assert error["error_user_msg"].startswith("data[0] ")


async def test_an_sdk_request_with_an_unhashed_email_is_refused_like_a_json_one(
    client: httpx.AsyncClient,
) -> None:
    event = make_event(user_data={"em": "jane@example.com", "client_user_agent": "UA"})

    response = await client.post(EVENTS_PATH, params=TOKEN,
                                 data={"data": json_strings(event)})

    assert (100, 2804019) == (error_of(response)["code"], error_of(response)["error_subcode"])


async def test_fields_meta_documents_beyond_the_basics_are_kept_as_sent(
    client: httpx.AsyncClient,
) -> None:
    event = make_event(
        original_event_data={"event_name": "Purchase", "event_time": NOW - 120},
        attribution_data={"scope": "click", "visit_time": NOW - 300, "ad_id": "1"},
        messaging_channel="whatsapp",
        customer_segmentation={"priority_segment": "high"},
    )

    response = await client.post(EVENTS_PATH, params=TOKEN, json={"data": [event]})

    assert 200 == response.status_code
    assert [event] == await stored_events(client)


async def test_an_app_event_with_app_data_is_accepted(client: httpx.AsyncClient) -> None:
    event = app_event()

    response = await client.post(EVENTS_PATH, params=TOKEN, data={"data": json_strings(event)})

    assert 200 == response.status_code
    assert [event] == await stored_events(client)


@pytest.mark.parametrize(("app_data", "field"), [
    (None, "app_data"),
    ({"application_tracking_enabled": 1, "extinfo": EXTINFO},
     "app_data.advertiser_tracking_enabled"),
    ({"advertiser_tracking_enabled": 1, "application_tracking_enabled": 1},
     "app_data.extinfo"),
    ({"advertiser_tracking_enabled": 1, "application_tracking_enabled": 1,
      "extinfo": ["x2", *EXTINFO[1:]]}, "app_data.extinfo"),
    ({"advertiser_tracking_enabled": 1, "application_tracking_enabled": 1,
      "extinfo": EXTINFO[:5]}, "app_data.extinfo"),
])
async def test_an_app_event_without_complete_app_data_is_refused(
    client: httpx.AsyncClient, app_data: dict[str, Any] | None, field: str,
) -> None:
    event = app_event(app_data=app_data)
    if app_data is None:
        del event["app_data"]

    response = await client.post(EVENTS_PATH, params=TOKEN, json={"data": [event]})

    error = error_of(response)
    assert (400, 100) == (response.status_code, error["code"])
    assert f"data[0].{field}" in error["error_user_msg"]
