"""Builders shared by the relay tests: settings with one pixel, events, envelopes, a fake Graph
API behind ``httpx.MockTransport``."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from relay.config import Settings, settings_from_mapping
from relay.events import Envelope, MetaEvent, UserData

PIXEL = "1234567890"
TOKEN = "test-token"
TOKEN_ENV = "PIXELRELAY_TEST_TOKEN"
EMAIL = "jane.doe@example.com"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64)"
FBC = "fb.1.1700000000000.IwAR2xYzAbC"
FBP = "fb.1.1700000000000.1234567890"
EXTINFO = ["a2", "com.shop.app", "1.0", "1.0.0", "14", "Pixel 8", "en_US", "CET", "", "1080",
           "2400", "2.6", "8", "128", "64", "Europe/Berlin"]
APP_DATA: dict[str, Any] = {"advertiser_tracking_enabled": 1, "application_tracking_enabled": 1,
                            "extinfo": EXTINFO}
"""What Meta requires of an app event's ``app_data``: both tracking flags and a full extinfo."""


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def make_settings(*, relay: Mapping[str, Any] | None = None,
                  pixel: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Settings with one pixel whose token comes from the (given) environment."""
    raw: dict[str, Any] = {
        "meta": {"graph_url": "https://graph.test"},
        "pixels": [{"id": PIXEL, "access_token_env": TOKEN_ENV, **(pixel or {})}],
    }
    if relay:
        raw["relay"] = dict(relay)
    env = {TOKEN_ENV: TOKEN} if environ is None else dict(environ)
    return settings_from_mapping(raw, env)


def meta_event(event_id: str = "e1", *, event_name: str = "Purchase",
               event_time: int | None = None, **user: Any) -> MetaEvent:
    """A website event that passes every validation rule unless ``user`` says otherwise."""
    user_data = {"em": sha(EMAIL), "client_user_agent": USER_AGENT,
                 "client_ip_address": "203.0.113.7", **user}
    return MetaEvent(
        event_name=event_name,
        event_time=int(time.time()) if event_time is None else event_time,
        event_id=event_id,
        action_source="website",
        event_source_url="https://shop.example/checkout",
        user_data=UserData(**{k: v for k, v in user_data.items() if v is not None}),
        custom_data={"currency": "EUR", "value": 12.5},
    )


def envelope(event_id: str = "e1", *, pixel_id: str = PIXEL, click_id: str | None = None,
             received_ms: int | None = None, **event_kwargs: Any) -> Envelope:
    return Envelope(
        pixel_id=pixel_id,
        event=meta_event(event_id, **event_kwargs),
        received_ms=int(time.time() * 1000) if received_ms is None else received_ms,
        source="server",
        click_id=click_id,
    )


def encoded(*envelopes: Envelope) -> list[str]:
    """Envelopes as the batch message carries them (JSON strings)."""
    return [msgspec.json.encode(e).decode() for e in envelopes]


def graph_error(code: int, *, subcode: int | None = None, message: str = "error",
                fbtrace_id: str = "trace-1", is_transient: bool | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code,
                             "fbtrace_id": fbtrace_id}
    if subcode is not None:
        error["error_subcode"] = subcode
    if is_transient is not None:
        error["is_transient"] = is_transient
    return {"error": error}


Responder = Callable[[httpx.Request, list[dict[str, Any]]], httpx.Response | None]


@dataclass
class FakeGraph:
    """Answers like Meta: accepts every batch unless ``respond`` returns another answer.

    ``batches`` holds the event ids of every POSTed batch, in order; ``accepted`` those Meta took.
    """

    respond: Responder | None = None
    requests: list[httpx.Request] = field(default_factory=list)
    batches: list[list[str]] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        data = msgspec.json.decode(request.content)["data"] if request.content else []
        self.batches.append([e["event_id"] for e in data])
        answer = self.respond(request, data) if self.respond else None
        if answer is not None:
            return answer
        self.accepted.extend(e["event_id"] for e in data)
        return httpx.Response(200, json={"events_received": len(data), "messages": [],
                                         "fbtrace_id": "ok-trace"})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)
