"""Injected latency, errors, outages and throttling, seen over HTTP."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from fakemeta import FakeMetaOptions
from tests.fakemeta.conftest import (
    PIXEL,
    TOKEN,
    ClientFactory,
    FakeClock,
    error_of,
    make_event,
    received,
    send,
)

# --- injected faults ---


async def test_latency_does_not_block_concurrent_requests(fake_meta: ClientFactory) -> None:
    client = fake_meta(FakeMetaOptions(latency_ms=200))

    started = time.perf_counter()
    responses = await asyncio.gather(*(send(client, make_event()) for _ in range(20)))
    elapsed_s = time.perf_counter() - started

    assert [200] * 20 == [r.status_code for r in responses]
    assert 0.2 <= elapsed_s < 2.0  # one-by-one would take 4 s


async def test_requests_held_by_latency_are_counted_in_flight(fake_meta: ClientFactory) -> None:
    client = fake_meta(FakeMetaOptions(latency_ms=300))

    sending = asyncio.gather(*(send(client, make_event()) for _ in range(3)))
    await asyncio.sleep(0.15)
    during = await received(client)
    await sending
    after = await received(client)

    assert [(3, 0), (0, 3)] == [(during["in_flight"], during["requests"]),
                                (after["in_flight"], after["requests"])]


async def test_seeded_error_rates_inject_the_same_errors_every_run(
    fake_meta: ClientFactory,
) -> None:
    options = FakeMetaOptions(error_rates={2: 0.3, 613: 0.2}, seed=1234)

    async def outcomes(client: httpx.AsyncClient) -> list[int]:
        codes = []
        for _ in range(40):
            response = await send(client, make_event())
            codes.append(error_of(response)["code"] if response.status_code != 200 else 0)
        return codes

    first = await outcomes(fake_meta(options))

    assert first == await outcomes(fake_meta(options))
    assert {0, 2, 613} == set(first)


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [(2, 400, True), (613, 400, True), (80004, 400, True), (190, 401, False), (200, 403, False)],
)
async def test_error_rate_of_one_fails_every_request_with_that_code(
    fake_meta: ClientFactory, code: int, status: int, transient: bool
) -> None:
    client = fake_meta(FakeMetaOptions(error_rates={code: 1.0}))

    response = await send(client, make_event())

    error = error_of(response)
    assert (status, code, transient) == (response.status_code, error["code"], error["is_transient"])
    assert {str(code): 1} == (await received(client))["rejected"]


async def test_http_500_rate_answers_500_with_a_transient_error(
    fake_meta: ClientFactory,
) -> None:
    client = fake_meta(FakeMetaOptions(http_500_rate=1.0))

    response = await send(client, make_event())

    assert (500, True) == (response.status_code, error_of(response)["is_transient"])


async def test_outage_window_answers_503_code_2_until_it_ends(
    fake_meta: ClientFactory, clock: FakeClock
) -> None:
    client = fake_meta(FakeMetaOptions(outage_windows=[(5, 10)]))

    before = await send(client, make_event())
    clock.advance(5)
    during = await send(client, make_event())
    health_during = await client.get(f"/v25.0/{PIXEL}", params=TOKEN)
    clock.advance(5)
    after = await send(client, make_event())

    assert [200, 503, 503, 200] == [r.status_code for r in (before, during, health_during, after)]
    assert (2, True) == (error_of(during)["code"], error_of(during)["is_transient"])


async def test_throttling_answers_80004_once_the_pixel_is_over_budget(
    fake_meta: ClientFactory, clock: FakeClock
) -> None:
    client = fake_meta(FakeMetaOptions(throttle_events_per_s=5))

    within = await send(client, *[make_event()] * 5)
    over = await send(client, make_event())
    other_pixel = await send(client, make_event(), path="/v25.0/999/events")
    clock.advance(1)
    refilled = await send(client, *[make_event()] * 5)

    assert [200, 400, 200, 200] == [r.status_code for r in (within, over, other_pixel, refilled)]
    error = error_of(over)
    assert (80004, True) == (error["code"], error["is_transient"])
    assert 10 == (await received(client))["pixels"][PIXEL]["events"]
