"""Sending built-in alert messages: Telegram's Bot API ``sendMessage`` or a signed JSON webhook.

``Outbox.put`` only queues: a thread of its own sends, one queue per endpoint, and retries a
message that failed (endpoint down, timeout, a non-2xx answer) with a growing pause, up to
``alerting.retry_max_s``, until the endpoint takes it. Messages to one endpoint keep their order;
an endpoint that is down holds up neither the others, nor the observer, nor delivery.
Up to ``MAX_PENDING`` messages wait per endpoint; beyond that the oldest is dropped and logged.

Webhook body: JSON (``Notice.as_json``); header ``X-Pixelrelay-Signature: sha256=<hex>``, the
HMAC-SHA256 of the exact body bytes under the endpoint's secret. Tokens and secrets never reach
a log line: errors are logged by type and status only (a Telegram URL holds the bot token).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import structlog

from relay.config import AlertSettings

log = structlog.get_logger("relay.notify")
SIGNATURE_HEADER = "X-Pixelrelay-Signature"
MAX_PENDING = 1_000
FIRST_RETRY_S = 1.0


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

    def as_json(self) -> bytes:
        return msgspec.json.encode({
            "condition": self.condition, "status": "firing" if self.firing else "resolved",
            "subject": self.subject, "values": self.values, "text": self.text,
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


@dataclass
class _Queue:
    alert: AlertSettings
    client: httpx.Client
    pending: deque[Notice] = field(default_factory=deque)
    failures: int = 0
    next_try: float = 0.0

    def wants(self, notice: Notice) -> bool:
        return not self.alert.conditions or notice.condition in self.alert.conditions


class Outbox:
    """Per-endpoint queues of messages, sent and retried by one thread."""

    def __init__(self, alerts: Sequence[AlertSettings], retry_max_s: float,
                 transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._queues = [
            _Queue(alert, httpx.Client(timeout=alert.timeout_ms / 1000, transport=transport))
            for alert in alerts
        ]
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay-alerts", daemon=True)
        self.sent = 0

    def put(self, notice: Notice) -> None:
        with self._lock:
            for queue in self._queues:
                if queue.wants(notice):
                    if len(queue.pending) >= MAX_PENDING:
                        dropped = queue.pending.popleft()
                        log.error("alert_dropped", kind=queue.alert.kind,
                                  condition=dropped.condition, pending=MAX_PENDING)
                    queue.pending.append(notice)
        self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return sum(len(q.pending) for q in self._queues)

    def send_due(self) -> float:
        """Try the first message of each endpoint that is due; seconds until the next try."""
        now = self._clock()
        wait = 3600.0
        for queue in self._queues:
            with self._lock:
                notice = queue.pending[0] if queue.pending else None
            if notice is None:
                continue
            if now < queue.next_try:
                wait = min(wait, queue.next_try - now)
                continue
            try:
                send(queue.client, queue.alert, notice)
            except SendFailed as exc:
                queue.failures += 1
                pause = min(self._retry_max_s, FIRST_RETRY_S * 2 ** (queue.failures - 1))
                if exc.retry_after_s is not None:
                    pause = max(pause, exc.retry_after_s)
                queue.next_try = self._clock() + pause
                wait = min(wait, pause)
                log.warning("alert_send_failed", kind=queue.alert.kind,
                            condition=notice.condition, reason=str(exc),
                            failures=queue.failures, retry_in_s=round(pause, 1))
                continue
            with self._lock:
                queue.pending.popleft()
                more = bool(queue.pending)
            queue.failures, queue.next_try = 0, 0.0
            self.sent += 1
            log.info("alert_sent", kind=queue.alert.kind, condition=notice.condition,
                     firing=notice.firing, **notice.subject)
            if more:
                wait = 0.0
        return wait

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                wait = self.send_due()
            except Exception as exc:  # noqa: BLE001 - the sender must outlive any surprise
                log.warning("alert_outbox_error", error=type(exc).__name__)
                wait = FIRST_RETRY_S
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()

    def start(self) -> None:
        if self._queues:
            self._thread.start()

    def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Give pending messages a last chance, then stop the thread."""
        deadline = time.monotonic() + flush_timeout_s
        while self.pending() and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(flush_timeout_s)
        for queue in self._queues:
            queue.client.close()
