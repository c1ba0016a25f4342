"""The Graph endpoints over HTTP, in process: answers, refusals, tokens."""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx
import msgspec
import pytest

from fakemeta import FakeMetaOptions, create_app
from tests.fakemeta.conftest import (
    EVENTS_PATH,
    PIXEL,
    TOKEN,
    ClientFactory,
    asgi_client,
    error_of,
    make_event,
    received,
    send,
)

# --- success ---


async def test_valid_batch_gets_events_received(client: httpx.AsyncClient) -> None:
    response = await send(client, make_event(event_id="a"), make_event(event_id="b"))

    assert 200 == response.status_code
    body = response.json()
    assert (2, []) == (body["events_received"], body["messages"])
    assert body["fbtrace_id"] == response.headers["x-fb-trace-id"]
    assert "v25.0" == response.headers["facebook-api-version"]


async def test_accepted_events_are_kept_with_test_event_code_and_partner_agent(
    client: httpx.AsyncClient,
) -> None:
    event = make_event()

    await send(client, event, test_event_code="TEST42", partner_agent="pixelrelay-0.1.0")

    stored = (await client.get("/_fake/events", params={"pixel_id": PIXEL})).json()
    assert {
        "pixel_id": PIXEL,
        "events": [event],
        "test_event_codes": ["TEST42"],
        "test_events": {"TEST42": [event["event_id"]]},
        "partner_agents": ["pixelrelay-0.1.0"],
    } == stored


async def test_form_encoded_body_with_data_as_json_string_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    form = {"data": msgspec.json.encode([make_event()]).decode(), "access_token": "good-token"}

    response = await client.post(EVENTS_PATH, data=form)

    assert (200, 1) == (response.status_code, response.json().get("events_received"))


async def test_multipart_form_body_is_accepted(client: httpx.AsyncClient) -> None:
    data = msgspec.json.encode([make_event()]).decode()

    response = await client.post(
        EVENTS_PATH, params=TOKEN, files={"data": (None, data), "test_event_code": (None, "T1")}
    )

    assert (200, 1) == (response.status_code, response.json().get("events_received"))


async def test_access_token_in_bearer_header_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        EVENTS_PATH,
        headers={"Authorization": "Bearer good-token"},
        json={"data": [make_event()]},
    )

    assert 200 == response.status_code


# --- refusals ---


async def test_invalid_token_gets_code_190_with_http_401(client: httpx.AsyncClient) -> None:
    response = await client.post(
        EVENTS_PATH, params={"access_token": "invalid"}, json={"data": [make_event()]}
    )

    assert 401 == response.status_code
    error = error_of(response)
    assert ("OAuthException", 190, False) == (error["type"], error["code"], error["is_transient"])
    assert error["fbtrace_id"]


async def test_token_outside_the_configured_list_gets_code_190(
    fake_meta: ClientFactory,
) -> None:
    client = fake_meta(FakeMetaOptions(tokens=frozenset({"the-one"})))

    accepted = await client.post(
        EVENTS_PATH, params={"access_token": "the-one"}, json={"data": [make_event()]}
    )
    refused = await send(client, make_event())

    assert (200, 401) == (accepted.status_code, refused.status_code)
    assert 190 == error_of(refused)["code"]


async def test_missing_token_gets_code_104(client: httpx.AsyncClient) -> None:
    response = await client.post(EVENTS_PATH, json={"data": [make_event()]})

    assert (400, 104) == (response.status_code, error_of(response)["code"])


async def test_more_than_1000_events_gets_code_100_and_records_nothing(
    client: httpx.AsyncClient,
) -> None:
    response = await send(client, *[make_event()] * 1001)

    assert (400, 100) == (response.status_code, error_of(response)["code"])
    assert {} == (await received(client))["pixels"]


async def test_invalid_event_gets_code_100_naming_the_field_and_records_nothing(
    client: httpx.AsyncClient,
) -> None:
    bad = make_event(user_data={"em": "jane@example.com", "client_user_agent": "UA"})

    response = await send(client, make_event(), bad)

    error = error_of(response)
    assert (400, 100, 2804019) == (response.status_code, error["code"], error["error_subcode"])
    assert "data[1].user_data.em" in error["error_user_msg"]
    assert {} == (await received(client))["pixels"]


async def test_body_that_is_not_json_gets_code_100(client: httpx.AsyncClient) -> None:
    response = await client.post(
        EVENTS_PATH, params=TOKEN, content=b"{oops", headers={"content-type": "application/json"}
    )

    assert (400, 100) == (response.status_code, error_of(response)["code"])


async def test_malformed_version_gets_unknown_path_error(client: httpx.AsyncClient) -> None:
    response = await send(client, make_event(), path=f"/25.0/{PIXEL}/events")

    assert (400, 2500) == (response.status_code, error_of(response)["code"])


async def test_non_numeric_pixel_id_gets_code_100_subcode_33(client: httpx.AsyncClient) -> None:
    response = await send(client, make_event(), path="/v25.0/my-pixel/events")

    error = error_of(response)
    assert (400, 100, 33) == (response.status_code, error["code"], error["error_subcode"])


async def test_unknown_path_gets_a_meta_shaped_error(client: httpx.AsyncClient) -> None:
    response = await client.get("/v25.0/1/2/3")

    assert (400, 2500) == (response.status_code, error_of(response)["code"])


# --- appsecret_proof ---


def proof(token: str, secret: str) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


async def test_the_right_appsecret_proof_is_accepted(fake_meta: ClientFactory) -> None:
    client = fake_meta(FakeMetaOptions(app_secrets={"tok": "s3cret"}))
    params = {"access_token": "tok", "appsecret_proof": proof("tok", "s3cret")}

    response = await client.post(EVENTS_PATH, params=params, json={"data": [make_event()]})

    assert 200 == response.status_code


@pytest.mark.parametrize(
    ("appsecret_proof", "message"),
    [(proof("tok", "other"), "Invalid appsecret_proof provided in the API argument"),
     (None, "API calls from the server require an appsecret_proof argument")],
    ids=["wrong", "missing"],
)
async def test_a_wrong_or_missing_appsecret_proof_is_refused_in_metas_words(
    fake_meta: ClientFactory, appsecret_proof: str | None, message: str
) -> None:
    client = fake_meta(FakeMetaOptions(app_secrets={"tok": "s3cret"}))
    params = {"access_token": "tok"}
    if appsecret_proof is not None:
        params["appsecret_proof"] = appsecret_proof

    response = await client.post(EVENTS_PATH, params=params, json={"data": [make_event()]})

    error = error_of(response)
    assert (400, 100, None, "GraphMethodException", message) == (
        response.status_code, error["code"], error.get("error_subcode"), error["type"],
        error["message"])


async def test_appsecret_proof_is_ignored_when_the_secret_is_unknown(
    client: httpx.AsyncClient,
) -> None:
    params = {"access_token": "tok", "appsecret_proof": "not-checked"}

    response = await client.post(EVENTS_PATH, params=params, json={"data": [make_event()]})

    assert 200 == response.status_code


# --- token health check ---


async def test_pixel_health_check_answers_id_and_name(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v26.0/{PIXEL}", params=TOKEN)

    assert (200, {"id": PIXEL, "name": "Fake pixel"}) == (response.status_code, response.json())


async def test_pixel_health_check_with_bad_token_gets_code_190(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(f"/v26.0/{PIXEL}", params={"access_token": "invalid"})

    assert (401, 190) == (response.status_code, error_of(response)["code"])


async def test_pixel_health_check_is_not_subject_to_error_rates(
    fake_meta: ClientFactory,
) -> None:
    client = fake_meta(FakeMetaOptions(error_rates={2: 1.0}))

    response = await client.get(f"/v26.0/{PIXEL}", params=TOKEN)

    assert 200 == response.status_code


# --- factory ---


async def test_create_app_without_options_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKEMETA_TOKENS", "env-token")
    app = create_app()

    async with asgi_client(app) as client:
        response = await send(client, make_event(event_time=int(time.time())))

    assert 401 == response.status_code
