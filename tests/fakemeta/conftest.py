"""Shared builders for the fake Meta tests: valid events, a controllable clock, ASGI clients."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar

from fakemeta import FakeMetaOptions, create_app
from fakemeta._errors import MetaError
from fakemeta._validation import EventBatch, validate_payload
from tests.relay.factories import APP_DATA, EXTINFO

__all__ = ["APP_DATA", "EXTINFO"]  # re-exported for the fake's tests

NOW = 1_800_000_000  # wall-clock "now" (Unix seconds) for every in-process test
PIXEL = "1234567890"
EVENTS_PATH = f"/v25.0/{PIXEL}/events"


TOKEN = {"access_token": "good-token"}


async def send(
    client: httpx.AsyncClient, *events: dict[str, Any], path: str = EVENTS_PATH, **params: Any
) -> httpx.Response:
    """POST a batch with a valid token."""
    return await client.post(path, params=TOKEN, json={"data": list(events), **params})


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


async def received(client: httpx.AsyncClient) -> dict[str, Any]:
    summary: dict[str, Any] = (await client.get("/_fake/received")).json()
    return summary


def asgi_client(app: Litestar) -> httpx.AsyncClient:
    """An in-process client; the cast bridges Litestar's and httpx's ASGI type spellings."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=cast(Any, app)), base_url="http://fakemeta.test"
    )


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def make_event(**overrides: Any) -> dict[str, Any]:
    """A website Purchase Meta accepts; keyword arguments replace top-level fields."""
    event: dict[str, Any] = {
        "event_name": "Purchase",
        "event_time": NOW - 60,
        "event_id": "order-1",
        "action_source": "website",
        "event_source_url": "https://shop.example/checkout",
        "user_data": {
            "em": [sha256("jane@example.com")],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0",
            "fbc": "fb.1.1700000000000.AbCdEf-123",
            "fbp": "fb.1.1700000000000.1234567890",
        },
        "custom_data": {"currency": "EUR", "value": 42.5},
    }
    event.update(overrides)
    return event


def check(*events: Any, **params: Any) -> EventBatch:
    """Validate a batch of ``events`` at ``NOW``."""
    return validate_payload({"data": list(events), **params}, now=NOW)


def rejection(*events: Any, **params: Any) -> MetaError:
    """The error validating a batch of ``events`` raises (fails the test if none)."""
    with pytest.raises(MetaError) as caught:
        check(*events, **params)
    return caught.value


def with_user_data(**user_data: Any) -> dict[str, Any]:
    """A valid event whose user_data is exactly ``user_data``."""
    return make_event(user_data=user_data)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def fake_meta(clock: FakeClock) -> AsyncIterator[ClientFactory]:
    """Opens in-process clients, each on its own fresh fake, all closed after the test."""
    opened: list[httpx.AsyncClient] = []

    def open_client(options: FakeMetaOptions | None = None) -> httpx.AsyncClient:
        app = create_app(options or FakeMetaOptions(), clock=clock, wall_clock=lambda: NOW)
        client = asgi_client(app)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.aclose()


@pytest.fixture
def client(fake_meta: ClientFactory) -> httpx.AsyncClient:
    """A client on a fake with default options (any token but "invalid")."""
    return fake_meta()
