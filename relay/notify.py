"""One built-in alert message and how it is sent: Telegram's Bot API ``sendMessage`` or a signed
JSON webhook. Queueing and retrying are ``relay.outbox``'s.

Webhook body: JSON (``Notice.as_json``); header ``X-Pixelrelay-Signature: sha256=<hex>``, the
HMAC-SHA256 of the exact body bytes under the endpoint's secret. The body's ``id`` is the same
on every try of one message, so a receiver can drop a repeat (delivery is at least once: a
worker killed between the endpoint's answer and the outbox's removal leaves the message to be
sent again). Tokens and secrets never reach a log line: errors are logged by type and status
only (a Telegram URL holds the bot token).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from relay.config import AlertSettings

SIGNATURE_HEADER = "X-Pixelrelay-Signature"


@dataclass(frozen=True, slots=True)
class Notice:
    """One alert message: a condition about a subject (a pixel, a queue) started or ended."""

    condition: str
    subject: dict[str, str]
    firing: bool
    text: str
    values: dict[str, Any]
    dashboard_url: str
    at_ms: int
    id: str = ""  # unique per message, the same on each try

    def as_json(self) -> bytes:
        return msgspec.json.encode({
            "id": self.id, "condition": self.condition,
            "status": "firing" if self.firing else "resolved", "subject": self.subject,
            "values": self.values, "text": self.text,
            "dashboard_url": self.dashboard_url, "at_ms": self.at_ms,
        })


class SendFailed(Exception):
    """The endpoint did not take the message; ``retry_after_s`` if it said when to retry."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _request(alert: AlertSettings, notice: Notice) -> httpx.Request:
    if alert.kind == "telegram":
        url = f"{alert.telegram_api_url.rstrip('/')}/bot{alert.bot_token}/sendMessage"
        body = msgspec.json.encode({"chat_id": alert.chat_id, "text": notice.text,
                                    "disable_web_page_preview": True})
        return httpx.Request("POST", url, content=body,
                             headers={"Content-Type": "application/json"})
    body = notice.as_json()
    return httpx.Request("POST", alert.url, content=body, headers={
        "Content-Type": "application/json", SIGNATURE_HEADER: signature(alert.secret, body),
        "User-Agent": "pixelrelay-alerts"})


def send(client: httpx.Client, alert: AlertSettings, notice: Notice) -> None:
    """Send one message; raise ``SendFailed`` unless the endpoint took it."""
    try:
        response = client.send(_request(alert, notice))
    except httpx.HTTPError as exc:
        raise SendFailed(type(exc).__name__) from None
    if response.is_success:
        return
    retry_after: float | None = None
    if response.status_code == 429:
        try:  # Telegram: {"parameters": {"retry_after": seconds}}
            retry_after = float(response.json()["parameters"]["retry_after"])
        except (ValueError, KeyError, TypeError):
            retry_after = None
    raise SendFailed(f"status {response.status_code}", retry_after)


def endpoint_key(alert: AlertSettings) -> str:
    """A short, stable name of an endpoint for its outbox in Redis: a digest of where the
    messages go (kind, URL, chat), never of a secret, so editing other settings keeps it."""
    where = (alert.kind, alert.telegram_api_url, alert.chat_id) if alert.kind == "telegram" else (
        alert.kind, alert.url)
    return hashlib.sha256("\x1f".join(where).encode()).hexdigest()[:16]
