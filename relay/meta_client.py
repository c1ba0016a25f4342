"""The Graph API client: one POST per batch, and the one place Meta's answers are classified.

``classify_meta_error`` maps an HTTP answer (status + Meta's error body) to the error tree in
``relay.errors``; ``MetaClient.send`` maps httpx's transport errors. The httpx transport is a
constructor argument so unit tests use ``httpx.MockTransport``.

Code 100 (invalid parameter) is an ``InvalidBatchError`` (split the batch to find the culprit)
only when Meta blames an event: a 2804xxx subcode, or a message naming ``data[<index>]`` as the
fake does. Any other code 100 (no subcode, 33 unknown or inaccessible pixel, a bad
``test_event_code`` or ``appsecret_proof``) is about the request: a ``PermanentError`` for the
whole batch, which splitting could not fix.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import structlog

from relay.config import MetaSettings, PixelSettings
from relay.errors import (
    DeliveryError,
    InvalidBatchError,
    PermanentError,
    ThrottledError,
    TransientError,
)
from relay.events import MetaEvent

TRANSIENT_CODES = frozenset({1, 2, 341, 368})
THROTTLE_CODES = frozenset({4, 17, 32, 613, 80004})
TOKEN_CODES = frozenset({190})
PERMISSION_CODES = frozenset({10, *range(200, 300)})
# Meta's per-event rules: 2804001 bad fbc, 2804003 too old, 2804019 malformed, 2804050 too
# little customer information, and the rest of the family.
EVENT_SUBCODES = range(2_804_000, 2_805_000)
# How an error names the event it is about: "data[3].user_data.em must be ..." (the index is the
# event's place in the request that was refused).
_EVENT_INDEX = re.compile(r"\bdata\[\d+\]")

log = structlog.get_logger("relay.meta_client")


class MetaErrorBody(msgspec.Struct):
    message: str = ""
    type: str = ""
    code: int | None = None
    error_subcode: int | None = None
    error_user_title: str | None = None
    error_user_msg: str | None = None
    fbtrace_id: str | None = None
    is_transient: bool | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: MetaErrorBody


class _Success(msgspec.Struct):
    events_received: int | None = None
    messages: list[Any] = msgspec.field(default_factory=list)
    fbtrace_id: str | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    events_received: int | None  # None when Meta's 2xx body could not be read
    fbtrace_id: str | None
    latency_ms: float


def _blames_an_event(err: MetaErrorBody) -> bool:
    if err.error_subcode is not None and err.error_subcode in EVENT_SUBCODES:
        return True
    return any(_EVENT_INDEX.search(text or "") for text in (err.message, err.error_user_msg))


def same_rejection(a: DeliveryError, b: DeliveryError) -> bool:
    """Meta gave the same answer twice, whichever event index each names."""
    return (a.code, a.subcode, _EVENT_INDEX.sub("data[]", a.message)) == (
        b.code, b.subcode, _EVENT_INDEX.sub("data[]", b.message))


def classify_meta_error(status: int, body: bytes) -> DeliveryError:
    """Every non-2xx answer from Meta becomes exactly one kind of ``DeliveryError``."""
    try:
        err = msgspec.json.decode(body, type=_ErrorEnvelope).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        err = None
    if err is None:
        message = f"HTTP {status} without a Graph API error body"
        if status == 429 or status >= 500 or status in (408, 409):
            return TransientError(message, status=status)
        return PermanentError(message, status=status)
    text = err.error_user_msg or err.message or f"Graph API error {err.code}"
    code = err.code
    kind: type[DeliveryError] = PermanentError
    if code in THROTTLE_CODES:
        kind = ThrottledError
    elif code in TOKEN_CODES or code in PERMISSION_CODES:
        kind = PermanentError
    elif code in TRANSIENT_CODES or err.is_transient or status >= 500 or status == 429:
        kind = TransientError
    elif code == 100 and _blames_an_event(err):
        kind = InvalidBatchError
    return kind(text, code=code, subcode=err.error_subcode, fbtrace_id=err.fbtrace_id,
                status=status)


def _accepted(pixel: PixelSettings, sent: int, response: httpx.Response, latency_ms: float
              ) -> SendResult:
    """A 2xx from Meta means Meta has the batch: sending it again would only make duplicates.

    An unreadable body or a count other than the one sent is logged, not retried. A 2xx with
    neither a readable count nor an fbtrace id anywhere is not from the Graph API at all (a
    wrong ``meta.graph_url``, a captive proxy): a ``PermanentError``, so the batch goes to the
    dead letters, from which ``pixelrelay requeue`` can send it once the address is mended.
    """
    try:
        ok = msgspec.json.decode(response.content, type=_Success)
        received, fbtrace_id = ok.events_received, ok.fbtrace_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        received, fbtrace_id = None, _readable_fbtrace_id(response.content)
    fbtrace_id = fbtrace_id or response.headers.get("x-fb-trace-id")
    if received is None and fbtrace_id is None:
        raise PermanentError(
            f"the Graph API address answered {response.status_code} with something that is "
            "not a Graph API answer (no events_received, no fbtrace_id): check meta.graph_url",
            status=response.status_code)
    if received != sent:
        log.warning("meta_accepted_with_anomaly", pixel_id=pixel.id, sent=sent,
                    events_received=received, fbtrace_id=fbtrace_id,
                    status=response.status_code)
    return SendResult(received, fbtrace_id, latency_ms)


def _readable_fbtrace_id(body: bytes) -> str | None:
    """The ``fbtrace_id`` of a 2xx body whose other fields are not what we expect."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    trace = decoded.get("fbtrace_id") if isinstance(decoded, dict) else None
    return trace if isinstance(trace, str) else None


def appsecret_proof(access_token: str, app_secret: str) -> str:
    return hmac.new(app_secret.encode(), access_token.encode(), hashlib.sha256).hexdigest()


class _Body(msgspec.Struct, omit_defaults=True):
    data: Sequence[MetaEvent | dict[str, Any]]
    partner_agent: str | None = None
    test_event_code: str | None = None


_encoder = msgspec.json.Encoder()


class MetaClient:
    def __init__(self, settings: MetaSettings, transport: httpx.BaseTransport | None = None
                 ) -> None:
        self.settings = settings
        self._client = httpx.Client(
            base_url=settings.graph_url.rstrip("/"),
            timeout=settings.timeout_ms / 1000,
            transport=transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            headers={"User-Agent": settings.partner_agent},
        )

    def close(self) -> None:
        self._client.close()

    def _params(self, pixel: PixelSettings) -> dict[str, str]:
        params = {"access_token": pixel.access_token}
        if pixel.app_secret:
            params["appsecret_proof"] = appsecret_proof(pixel.access_token, pixel.app_secret)
        return params

    def _version(self, pixel: PixelSettings) -> str:
        return pixel.api_version or self.settings.api_version

    def send(self, pixel: PixelSettings, events: Sequence[MetaEvent],
             test_event_code: str | None = None) -> SendResult:
        """POST one batch; raise a ``DeliveryError`` subclass unless Meta answered 2xx.

        ``test_event_code`` is the batch's own (its events came with it); else the pixel's.
        """
        body = _encoder.encode(_Body(
            data=[event.wire() for event in events],
            partner_agent=self.settings.partner_agent or None,
            test_event_code=test_event_code or pixel.test_event_code or None,
        ))
        started = time.perf_counter()
        try:
            response = self._client.post(
                f"/{self._version(pixel)}/{pixel.id}/events",
                params=self._params(pixel),
                content=body,
                headers={"Content-Type": "application/json"},
            )
        except httpx.TimeoutException as exc:
            raise TransientError(f"timeout talking to Meta: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            raise TransientError(f"transport error talking to Meta: {type(exc).__name__}") from None
        latency_ms = (time.perf_counter() - started) * 1000
        if response.status_code // 100 != 2:
            raise classify_meta_error(response.status_code, response.content)
        return _accepted(pixel, len(events), response, latency_ms)

    def check_pixel(self, pixel: PixelSettings) -> DeliveryError | None:
        """GET the pixel node: None when the token is valid and the API reachable."""
        try:
            response = self._client.get(f"/{self._version(pixel)}/{pixel.id}",
                                        params=self._params(pixel))
        except httpx.HTTPError as exc:
            return TransientError(f"Meta unreachable: {type(exc).__name__}")
        if response.status_code // 100 == 2:
            return None
        return classify_meta_error(response.status_code, response.content)
