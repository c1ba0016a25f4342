"""The fake Graph API's decisions, free of HTTP: who may call, what gets refused, what is kept.

``app.py`` turns requests into calls on ``FakeGraph`` and its answers (or ``MetaError``) into
responses. Checks run in this order, so an outage hides everything and nothing invalid is
ever throttled or recorded:

    outage (503/2) -> path (2500, 100/33) -> token (104, 190) -> appsecret_proof (100)
      -> injected 500/error code -> body rules (100/...) -> throttle (80004) -> accepted
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from fakemeta import _errors
from fakemeta._errors import MetaError
from fakemeta._faults import Faults
from fakemeta._options import FakeMetaOptions
from fakemeta._store import Store
from fakemeta._validation import parse_json_body, validate_payload

log = structlog.get_logger("fakemeta")

_VERSION = re.compile(r"v\d+\.\d+")
_OBJECT_ID = re.compile(r"\d+")
REJECTED_TOKEN = "invalid"


@dataclass(frozen=True)
class GraphCall:
    """The parts of an HTTP request the Graph API reads its parameters from."""

    query: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] | None = None
    """The form fields when the body was form-encoded; then ``body`` is ignored."""
    body: bytes = b""
    authorization: str = ""

    def params(self) -> dict[str, Any]:
        """Query parameters overlaid with the body's: Graph takes parameters from either."""
        params: dict[str, Any] = dict(self.query)
        params.update(self.form if self.form is not None else parse_json_body(self.body))
        return params

    def access_token(self, params: Mapping[str, Any]) -> str | None:
        """The token from ``access_token`` (query or body) or ``Authorization: Bearer``."""
        token = params.get("access_token")
        if isinstance(token, str) and token:
            return token
        scheme, _, credentials = self.authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return None


def new_fbtrace_id() -> str:
    """An opaque id like Meta's, for matching a response to a log line."""
    return secrets.token_urlsafe(8)


class FakeGraph:
    """One fake Graph API: its options, what it received and the faults it injects."""

    def __init__(
        self,
        options: FakeMetaOptions,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.options = options
        self.store = Store(max_events_kept=options.max_events_kept, clock=wall_clock)
        self.faults = Faults(options, clock)
        self._wall_clock = wall_clock

    async def hold(self) -> None:
        """Wait out the injected latency without blocking other requests."""
        delay_s = self.faults.latency_s()
        if delay_s:
            self.store.hold_started()
            try:
                await asyncio.sleep(delay_s)
            finally:
                self.store.hold_ended()

    def receive_events(self, version: str, pixel_id: str, call: GraphCall) -> int:
        """Handle ``POST /{version}/{pixel_id}/events``; returns events_received."""
        self.store.count_request()
        try:
            self._check_available()
            self._check_path(version, pixel_id, "POST", f"/{version}/{pixel_id}/events")
            params = call.params()
            self._check_access(call, params)
            injected = self.faults.draw_error(pixel_id)
            if injected is not None:
                raise injected
            batch = validate_payload(params, now=self._wall_clock())
            if not self.faults.take_budget(pixel_id, len(batch.events)):
                raise _errors.throttled()
        except MetaError as error:
            self.store.record_rejection(error.code)
            log.info(
                "events_rejected",
                pixel_id=pixel_id,
                code=error.code,
                error_subcode=error.subcode,
                http_status=error.http_status,
            )
            raise
        duplicates = self.store.record_batch(pixel_id, batch)
        log.debug(
            "events_received", pixel_id=pixel_id, events=len(batch.events), duplicates=duplicates
        )
        return len(batch.events)

    def describe_pixel(self, version: str, pixel_id: str, call: GraphCall) -> dict[str, Any]:
        """Handle ``GET /{version}/{pixel_id}``, the relay's token health check."""
        self._check_available()
        self._check_path(version, pixel_id, "GET", f"/{version}/{pixel_id}")
        self._check_access(call, call.params())
        return {"id": pixel_id, "name": "Fake pixel"}

    def _check_available(self) -> None:
        if self.faults.in_outage():
            raise _errors.service_unavailable()

    def _check_path(self, version: str, pixel_id: str, method: str, path: str) -> None:
        if not _VERSION.fullmatch(version):
            raise _errors.unknown_path(path)
        if not _OBJECT_ID.fullmatch(pixel_id):
            raise _errors.unknown_object(pixel_id, method)

    def _check_access(self, call: GraphCall, params: Mapping[str, Any]) -> None:
        token = call.access_token(params)
        if not token:
            raise _errors.token_missing()
        tokens = self.options.tokens
        valid = token in tokens if tokens else token != REJECTED_TOKEN
        if not valid or token in self.faults.revoked_tokens:
            raise _errors.token_invalid()
        secret = self.options.app_secrets.get(token)
        if secret is not None:
            proof = params.get("appsecret_proof")
            if proof is None or proof == "":
                raise _errors.missing_appsecret_proof()
            if not isinstance(proof, str):
                raise _errors.bad_appsecret_proof()
            expected = hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected.encode(), proof.lower().encode()):
                raise _errors.bad_appsecret_proof()
