"""``POST /{version}/{pixel_id}/events``: the collector as a drop-in for Meta's Graph API.

An integration that already calls Meta (the official SDKs, a server-side tag) changes only its
base URL: the request shapes are Meta's, the access token it sends is a pixelrelay API key
allowed for that pixel, and the answers are Meta's. Success,
``{"events_received", "messages", "fbtrace_id"}``, comes only once the events are stored
durably; the relay then batches, retries and deduplicates them like any other server event.

Accepted shapes (as in fakemeta, docs/integrations.md): a JSON body, or form-encoded or
multipart fields, with ``data`` an array of events as objects or as JSON strings (what the SDKs
send); the token as ``access_token`` in the query or the body, or ``Authorization: Bearer``.
``test_event_code`` is per request, as at Meta: it travels with each event's envelope and the
relay sends events with different codes in different requests (``relay.delivery``).
``appsecret_proof`` is checked as Meta checks it (``check_appsecret_proof``) against the API
key's app secret (``api_keys.app_secret_env``), else the pixel's: a wrong proof is refused, a
missing one only for a key with ``require_appsecret_proof``; with no secret configured a proof
is accepted unchecked.

Events consent keeps from Meta (``relay.consent``) are not counted in ``events_received``; a
sentence per reason in ``messages`` says how many and why (``withheld_messages``).

Refusals are Meta's error shape, so clients that read ``error.code`` work unchanged:

    InputError 401 -> 190 OAuthException      InputError 403 -> 10 (permission)
    appsecret_proof wrong or required and missing -> 100 GraphMethodException (HTTP 400)
    InputError 4xx -> 100 (HTTP 400, 413 for too many events), with Meta's subcode where the
                      rule has one (``InputError.reason``)
    StorageError   -> 503, code 2, is_transient (retry)     unknown path -> 2500
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.datastructures import UploadFile
from litestar.exceptions import HTTPException

from collector.context import CollectorContext, json_encode
from collector.ingest import store_server_events
from relay.config import ApiKeySettings
from relay.consent import Withheld
from relay.errors import InputError, StorageError
from relay.meta_client import appsecret_proof
from relay.validation import problem_with_test_event_code

_VERSION = re.compile(r"v\d+\.\d+")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_SUBCODES = {"bad_fbc": 2804001, "event_too_old": 2804003, "malformed_user_data": 2804019}
_TITLES = {190: "Invalid OAuth access token", 10: "Permission denied",
           2: "Service temporarily unavailable", 2500: "Unknown path components"}


class GraphError(Exception):
    """A refusal rendered as Meta's ``{"error": {...}}``."""

    def __init__(self, message: str, code: int, status: int, *, subcode: int | None = None,
                 transient: bool = False, error_type: str = "OAuthException") -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status
        self.subcode, self.transient, self.error_type = subcode, transient, error_type

    def response(self, headers: dict[str, str] | None = None) -> Response:
        trace_id = secrets.token_urlsafe(8)
        error: dict[str, Any] = {"message": self.message, "type": self.error_type,
                                 "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["error_user_title"] = _TITLES.get(self.code, "Invalid Parameter")
        error["error_user_msg"] = self.message
        error["fbtrace_id"] = trace_id
        error["is_transient"] = self.transient
        return Response(json_encode({"error": error}), status_code=self.status,
                        media_type="application/json",
                        headers={"x-fb-trace-id": trace_id, **(headers or {})})


def graph_error_of(exc: Exception) -> GraphError:
    """The Meta-shaped refusal for one of our errors (the one translation, at this edge)."""
    if isinstance(exc, GraphError):
        return exc
    if isinstance(exc, StorageError):
        return GraphError(f"{exc}; retry shortly", 2, 503, transient=True)
    if isinstance(exc, InputError):
        if exc.status == 401:
            return GraphError(exc.message, 190, 401)
        if exc.status == 403:
            return GraphError(exc.message, 10, 403)
        status = 413 if exc.status == 413 else 400  # Meta answers 400 to every code 100
        return GraphError(exc.message, 100, status, subcode=_SUBCODES.get(exc.reason or ""))
    if isinstance(exc, HTTPException):
        if exc.status_code == 413:
            return GraphError("the request body is too large", 100, 413)
        if exc.status_code == 405:
            return GraphError("Unsupported request: /{version}/{pixel_id}/events takes POST",
                              100, 405)
        return GraphError(str(exc.detail), 100, exc.status_code)
    raise exc


async def handle_graph_events(ctx: CollectorContext, request: Request, version: str,
                              pixel_id: str) -> Response:
    if not _VERSION.fullmatch(version):
        raise GraphError(f"Unknown path components: /{version}/{pixel_id}/events", 2500, 400)
    params = await graph_params(request)
    token = access_token(params, request.headers.get("authorization"))
    key = ctx.key_for_token(token)
    if pixel_id not in ctx.pixel_ids:
        raise GraphError(
            f"Unsupported post request. Object with ID '{pixel_id}' is not a pixel this "
            "collector relays", 100, 400, subcode=33)
    check_appsecret_proof(params.get("appsecret_proof"), token, key,
                          ctx.pixels[pixel_id].app_secret)
    located = [(f"data[{i}]", event) for i, event in enumerate(events_of(params.get("data")))]
    test_event_code = params.get("test_event_code") or None  # an empty field is no code
    if (found := problem_with_test_event_code(test_event_code)) is not None:
        raise InputError(f"test_event_code {found}", 400)
    stored = await store_server_events(ctx, key, located, pixel_id=pixel_id,
                                       test_event_code=test_event_code)
    ctx.metrics.requests.labels("graph", "200").inc()
    trace_id = secrets.token_urlsafe(8)
    answer = {"events_received": len(stored.event_ids) - stored.withheld,
              "messages": withheld_messages(stored.withheld_by_reason, pixel_id),
              "fbtrace_id": trace_id}
    return Response(
        json_encode(answer), media_type="application/json",
        headers={"x-fb-trace-id": trace_id, "facebook-api-version": version},
    )


def withheld_messages(by_reason: Mapping[Withheld, int], pixel_id: str) -> list[str]:
    """What consent kept from Meta, as sentences in Meta's ``messages`` (a list of strings the
    SDKs hand to their caller); ``events_received`` counts only the events stored."""
    messages = []
    denied, unsaid = by_reason.get("consent_denied", 0), by_reason.get("no_consent", 0)
    if denied:
        messages.append(f"{_events(denied)} withheld: the event said \"consent\": false, so it "
                        "is counted but never stored or sent to Meta")
    if unsaid:
        messages.append(f"{_events(unsaid)} withheld: pixel {pixel_id} requires the visitor's "
                        "consent and the event carried none (send \"consent\": true in each "
                        "event the visitor agreed to); counted but never stored or sent to Meta")
    return messages


def _events(n: int) -> str:
    return "1 event" if n == 1 else f"{n} events"


async def graph_params(request: Request) -> dict[str, Any]:
    """The query string overlaid with the body's fields (JSON, form or multipart)."""
    params: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type in _FORM_TYPES:
        for name, value in (await request.form()).items():
            if isinstance(value, UploadFile):  # curl -F 'data=@events.json'
                value = (await value.read()).decode("utf-8", "replace")
            params[name] = value
        return params
    body = await request.body()
    if body.strip():
        decoded = _json(body, "the request body")
        if not isinstance(decoded, dict):
            raise InputError("the request body must be a JSON object with a data array", 400)
        params.update(decoded)
    return params


def check_appsecret_proof(proof: Any, token: str, key: ApiKeySettings,
                          pixel_secret: str) -> None:
    """Meta's ``appsecret_proof`` rule, with the key's app secret, else the pixel's.

    A proof is HMAC-SHA256(key=app secret, msg=access token) in hex, compared in constant
    time; a wrong one is refused as Meta refuses it. Without a secret to check against, a proof
    is accepted unchecked; a missing one is refused only for a key that requires it.
    """
    if proof is None or proof == "":
        if key.require_appsecret_proof:
            raise GraphError("API calls from the server require an appsecret_proof argument",
                             100, 400, error_type="GraphMethodException")
        return
    secret = key.app_secret or pixel_secret
    if not secret:
        return
    expected = appsecret_proof(token, secret).encode()
    given = proof.strip().lower().encode() if isinstance(proof, str) else b""
    if not hmac.compare_digest(expected, given):
        raise GraphError("Invalid appsecret_proof provided in the API argument", 100, 400,
                         error_type="GraphMethodException")


def access_token(params: dict[str, Any], authorization: str | None) -> str:
    """``access_token`` from the query or the body, else ``Authorization: Bearer``."""
    token = params.get("access_token")
    if isinstance(token, str) and token.strip():
        return token.strip()
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    raise InputError("send a pixelrelay API key as access_token (query or body) or as "
                     "'Authorization: Bearer <key>'", 401)


def events_of(data: Any) -> list[Any]:
    """``data`` as a list of decoded events: a JSON array (or its text), each element an
    object or the JSON text of one, as Meta's SDKs send it."""
    if data is None:
        raise InputError("The parameter data is required", 400)
    if isinstance(data, str):
        data = _json(data.encode(), "data")
    if not isinstance(data, list):
        raise InputError("data must be an array of events", 400)
    return [_json(e.encode(), f"data[{i}]") if isinstance(e, str) else e
            for i, e in enumerate(data)]


def _json(raw: bytes, what: str) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise InputError(f"{what} is not valid JSON", 400) from None
    except RecursionError:
        raise InputError(f"{what} is nested too deeply", 400) from None
