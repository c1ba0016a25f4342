"""The /_fake endpoints: what arrived, duplicates, reset and runtime faults."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fakemeta.conftest import (
    EVENTS_PATH,
    PIXEL,
    TOKEN,
    error_of,
    make_event,
    received,
    send,
)

# --- /_fake endpoints ---


async def test_healthz_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/_fake/healthz")

    assert (200, {"status": "ok"}) == (response.status_code, response.json())


async def test_received_counts_requests_batches_and_rejections(
    client: httpx.AsyncClient,
) -> None:
    await send(client, make_event(event_id="a"), make_event(event_id="b"))
    await send(client, make_event(event_id="c"))
    await client.post(EVENTS_PATH, params={"access_token": "invalid"}, json={"data": []})
    await send(client, make_event(event_time=1))

    assert {
        "pixels": {PIXEL: {"events": 3, "event_ids": ["a", "b", "c"], "duplicates": 0}},
        "requests": 4,
        "in_flight": 0,
        "batches": 2,
        "batch_sizes": [2, 1],
        "rejected": {"100": 1, "190": 1},
    } == await received(client)


async def test_repeated_event_id_and_name_is_counted_as_duplicate(
    client: httpx.AsyncClient,
) -> None:
    await send(client, make_event(event_id="order-9"))
    await send(client, make_event(event_id="order-9"), make_event(event_id="order-10"))
    await send(client, make_event(event_id="order-9", event_name="AddToCart"))

    pixel = (await received(client))["pixels"][PIXEL]
    assert (4, 1) == (pixel["events"], pixel["duplicates"])


async def test_reset_forgets_what_was_received(client: httpx.AsyncClient) -> None:
    await send(client, make_event())

    response = await client.post("/_fake/reset")

    assert 200 == response.status_code
    assert {"pixels": {}, "requests": 0, "in_flight": 0, "batches": 0, "batch_sizes": [],
            "rejected": {}} == (
        await received(client)
    )


async def test_faults_endpoint_changes_faults_while_running(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/_fake/faults", json={"error_rates": {"613": 1.0}, "latency_ms": 1}
    )

    assert 200 == response.status_code
    assert ({"613": 1.0}, 1) == (response.json()["error_rates"], response.json()["latency_ms"])
    assert 613 == error_of(await send(client, make_event()))["code"]
    assert response.json() == (await client.get("/_fake/faults")).json()


async def test_faults_endpoint_starts_and_ends_an_outage(client: httpx.AsyncClient) -> None:
    await client.post("/_fake/faults", json={"outage_s": 30})
    during = await send(client, make_event())
    await client.post("/_fake/faults", json={"outage_s": 0})
    after = await send(client, make_event())

    assert (503, 200) == (during.status_code, after.status_code)


async def test_faults_endpoint_revokes_and_restores_a_token(client: httpx.AsyncClient) -> None:
    token = TOKEN["access_token"]
    revoked = await client.post("/_fake/faults", json={"revoked_tokens": [token]})
    during = await send(client, make_event())
    check = await client.get(f"/v26.0/{PIXEL}", params=TOKEN)
    await client.post("/_fake/faults", json={"revoked_tokens": []})
    after = await send(client, make_event())

    assert 1 == revoked.json()["revoked_tokens"] and token not in revoked.text
    assert (401, 190, 401, 200) == (during.status_code, error_of(during)["code"],
                                    check.status_code, after.status_code)


@pytest.mark.parametrize(
    "body",
    [{"latency": 5}, {"http_500_rate": 2}, {"error_rates": {"2": 0.7}, "http_500_rate": 0.5}],
    ids=["unknown-field", "out-of-range", "rates-above-one"],
)
async def test_faults_endpoint_refuses_bad_settings_with_a_sentence(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post("/_fake/faults", json=body)

    assert 400 == response.status_code
    assert response.json()["error"].startswith("Fault settings refused: ")
    assert 0 == (await client.get("/_fake/faults")).json()["http_500_rate"]
