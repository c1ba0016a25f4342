"""The event model: what clients send, what is stored in Redis, what Meta receives.

``InboundEvent`` is the public API shape (raw or hashed personal data). ``build_event`` turns it
into a ``MetaEvent`` whose ``user_data`` is already normalized and hashed, so raw personal data
never reaches Redis, the spool or a log line. An ``Envelope`` wraps a ``MetaEvent`` with what the
relay needs (pixel, click to enrich from, when it was received) and is the unit stored in the
inbox and carried inside batch messages.
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any, Literal

import msgspec
from msgspec import Struct

from relay.errors import InputError
from relay.hashing import HASHED_KEYS, UnnormalizableValue, context_for, hash_user_field

# The event rules live in relay.validation; these are re-exported for older imports.
from relay.validation import ACTION_SOURCES as ACTION_SOURCES
from relay.validation import EXTINFO_LENGTH as EXTINFO_LENGTH
from relay.validation import EXTINFO_VERSIONS as EXTINFO_VERSIONS
from relay.validation import SECONDS_IN_DAY as SECONDS_IN_DAY
from relay.validation import app_data_problem as app_data_problem
from relay.validation import door_problem

MAX_EVENTS_PER_REQUEST = 1000
MAX_PASSTHROUGH_BYTES = 16_384  # per event: the unknown fields, JSON-encoded
_MS_THRESHOLD = 100_000_000_000  # a Unix time above this is milliseconds, not seconds

Source = Literal["redirect", "beacon", "server"]
StrOrList = str | list[str]


class UserData(Struct, omit_defaults=True):
    """Meta's user_data, hashed keys already hashed."""

    em: StrOrList | None = None
    ph: StrOrList | None = None
    fn: StrOrList | None = None
    ln: StrOrList | None = None
    db: StrOrList | None = None
    ge: StrOrList | None = None
    ct: StrOrList | None = None
    st: StrOrList | None = None
    zp: StrOrList | None = None
    country: StrOrList | None = None
    external_id: StrOrList | None = None
    client_ip_address: str | None = None
    client_user_agent: str | None = None
    fbc: str | None = None
    fbp: str | None = None
    subscription_id: str | None = None
    fb_login_id: str | None = None
    lead_id: str | None = None
    # App, Messenger/WhatsApp and Instagram identifiers Meta documents; sent in clear.
    anon_id: str | None = None
    madid: str | None = None
    page_id: str | None = None
    page_scoped_user_id: str | None = None
    ctwa_clid: str | None = None
    ig_account_id: str | None = None
    ig_sid: str | None = None
    # Older customer keys Meta's SDKs still send (relay.hashing.LEGACY_KEYS); hashed. Last,
    # because the packed form stores these fields in this order.
    f5first: StrOrList | None = None
    f5last: StrOrList | None = None
    fi: StrOrList | None = None
    dobd: StrOrList | None = None
    dobm: StrOrList | None = None
    doby: StrOrList | None = None


class InboundUserData(UserData, forbid_unknown_fields=True, omit_defaults=True):
    """``user_data`` as clients send it: the same keys, hashed ones possibly still raw."""


class MetaExtensions(Struct, kw_only=True, omit_defaults=True):
    """The server-event fields Meta documents beyond the basics, and everything else a client
    sends: both pass through to Meta unchanged (checked by ``check_extensions``)."""

    app_data: dict[str, Any] | None = None
    original_event_data: dict[str, Any] | None = None
    attribution_data: dict[str, Any] | None = None
    customer_segmentation: dict[str, Any] | None = None
    messaging_channel: str | None = None
    passthrough: dict[str, Any] | None = None
    """Top-level fields this version does not know, as sent; merged back into the event on the
    wire (``MetaEvent.wire``)."""


class InboundEvent(MetaExtensions, forbid_unknown_fields=True, omit_defaults=True):
    """One event as the business's app posts it to ``/v1/events`` (``inbound_event`` puts
    unknown top-level fields into ``passthrough``)."""

    event_name: str
    event_time: int | None = None
    event_id: str | None = None
    action_source: str = "website"
    event_source_url: str | None = None
    referrer_url: str | None = None
    user_data: InboundUserData | None = None
    custom_data: dict[str, Any] | None = None
    opt_out: bool | None = None
    data_processing_options: list[str] | None = None
    data_processing_options_country: int | None = None
    data_processing_options_state: int | None = None
    click_id: str | None = None
    pixel_id: str | None = None
    consent: bool | None = None  # the visitor's consent signal (relay.consent); never sent
    test_event_code: str | None = None  # sent with the event's batch (Envelope), not in it


class MetaEvent(MetaExtensions, omit_defaults=True):
    """One element of the ``data`` array Meta receives (see ``wire``)."""

    event_name: str
    event_time: int
    event_id: str
    action_source: str
    user_data: UserData
    event_source_url: str | None = None
    referrer_url: str | None = None
    custom_data: dict[str, Any] | None = None
    opt_out: bool | None = None
    data_processing_options: list[str] | None = None
    data_processing_options_country: int | None = None
    data_processing_options_state: int | None = None

    def wire(self) -> MetaEvent | dict[str, Any]:
        """What goes into Meta's ``data``: the event, with ``passthrough`` merged back in."""
        if not self.passthrough:
            return self
        fields = msgspec.to_builtins(msgspec.structs.replace(self, passthrough=None))
        return {**self.passthrough, **fields}


class Envelope(Struct, omit_defaults=True):
    """What is stored per event and pixel; the relay's unit of work."""

    pixel_id: str
    event: MetaEvent
    received_ms: int
    source: Source
    click_id: str | None = None
    test_event_code: str | None = None
    """The request's ``test_event_code`` (Events Manager's Test Events): sent with the batch,
    never inside the event, so events with different codes never share a request."""

    @property
    def dedup_key(self) -> str:
        return f"{self.pixel_id}:{self.event.event_name}:{self.event.event_id}"


class ClickContext(Struct, array_like=True):
    """What a redirect learned about the visitor; later server events refer to it by click_id.

    Kept for ``collector.click_ttl_days`` per click, compactly (``relay.clicks``), with only
    what enrichment and attribution need. When the click's own events refer to it
    (``collector.context.CollectorContext.events_refer_to_click``), it also holds their landing
    URL and referrer, stored once instead of once per pixel (``complete_from_click``). Fields
    are added at the end only: the stored form is this order.
    """

    click_id: str
    slug: str
    time_ms: int
    fbc: str | None = None
    fbp: str | None = None
    client_ip_address: str | None = None
    client_user_agent: str | None = None
    utm: dict[str, str] | None = None
    page_url: str | None = None
    referrer_url: str | None = None


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(Envelope)


def encode(obj: Struct) -> bytes:
    return _encoder.encode(obj)


def decode_envelope(data: bytes | str) -> Envelope:
    """An envelope as stored: packed (``pack_envelope``) or, written before it, a JSON object."""
    if data[:1] in (b"[", "["):
        return _unpack_envelope(data)
    return _envelope_decoder.decode(data)


# -- the packed form the inbox holds -------------------------------------------------------------
# ``[1, pixel_id, received_ms, source, click_id, <MetaEvent fields in declared order>]``, the
# user_data in it the UserData fields in declared order, trailing empty fields left out, and
# each hashed value (64 hex digits) written in base64url after a "~" (43 characters instead of
# 64; a value that starts with "~" itself gets another). Half the bytes of the JSON object for a
# server Purchase, and still text, so it travels inside Dramatiq's JSON messages unchanged. The
# field order of MetaEvent and UserData is therefore part of the stored format: add fields at
# the end only (tests/relay/test_events.py pins it). An envelope with a test_event_code is
# written as version 2, ``[2, pixel_id, received_ms, source, click_id, test_event_code, ...]``;
# every other one stays version 1, byte for byte what earlier versions wrote and read.
PACKED_VERSION = 1
PACKED_VERSION_WITH_TEST_CODE = 2
_USER_FIELDS = UserData.__struct_fields__
_EVENT_FIELDS = MetaEvent.__struct_fields__
_USER_DATA_AT = _EVENT_FIELDS.index("user_data")
_HASHED_AT = tuple(i for i, name in enumerate(_USER_FIELDS) if name in HASHED_KEYS)
_LOWER_HEX = frozenset("0123456789abcdef")


def _trimmed(values: list[Any]) -> list[Any]:
    while values and values[-1] is None:
        values.pop()
    return values


def _pack_hashed(value: Any) -> Any:
    if isinstance(value, list):
        return [_pack_hashed(v) for v in value]
    if isinstance(value, str):
        if len(value) == 64 and _LOWER_HEX.issuperset(value):
            return "~" + base64.urlsafe_b64encode(bytes.fromhex(value)).decode()[:43]
        if value.startswith("~"):
            return "~" + value
    return value


def _unpack_hashed(value: Any) -> Any:
    if isinstance(value, list):
        return [_unpack_hashed(v) for v in value]
    if isinstance(value, str) and value.startswith("~"):
        if value.startswith("~~"):
            return value[1:]
        return base64.urlsafe_b64decode(value[1:] + "=").hex()
    return value


def pack_envelope(env: Envelope) -> bytes:
    """The compact form of an envelope stored in the inbox (see above)."""
    user = list(msgspec.structs.astuple(env.event.user_data))
    for i in _HASHED_AT:
        if user[i] is not None:
            user[i] = _pack_hashed(user[i])
    event = list(msgspec.structs.astuple(env.event))
    event[_USER_DATA_AT] = _trimmed(user)
    head: list[Any] = [PACKED_VERSION, env.pixel_id, env.received_ms, env.source, env.click_id]
    if env.test_event_code is not None:
        head = [PACKED_VERSION_WITH_TEST_CODE, *head[1:], env.test_event_code]
    return _encoder.encode([*head, *_trimmed(event)])


def _unpack_envelope(data: bytes | str) -> Envelope:
    try:
        version, pixel_id, received_ms, source, click_id, *event = msgspec.json.decode(data)
        test_event_code = None
        if version == PACKED_VERSION_WITH_TEST_CODE:
            test_event_code, *event = event
            if not isinstance(test_event_code, str):
                raise ValueError("the test_event_code is not a string")
        elif version != PACKED_VERSION:
            raise msgspec.ValidationError(f"packed envelope version {version} is unknown")
        user = event[_USER_DATA_AT]
        for i in _HASHED_AT:
            if i < len(user) and user[i] is not None:
                user[i] = _unpack_hashed(user[i])
        event[_USER_DATA_AT] = UserData(*user)
        if len(event) > len(_EVENT_FIELDS):
            raise ValueError(f"{len(event)} event fields, more than {len(_EVENT_FIELDS)}")
        fields = dict(zip(_EVENT_FIELDS, event, strict=False))  # trailing empty ones left out
        return Envelope(pixel_id=pixel_id, event=MetaEvent(**fields), received_ms=received_ms,
                        source=source, click_id=click_id, test_event_code=test_event_code)
    except (TypeError, ValueError, IndexError) as exc:  # not the shape pack_envelope writes
        raise msgspec.ValidationError(f"malformed packed envelope: {exc}") from None


_INBOUND_FIELDS = frozenset(InboundEvent.__struct_fields__) - {"passthrough"}
# Never passed through at the top level: raw personal data must reach user_data to be hashed.
_CUSTOMER_KEYS = frozenset(UserData.__struct_fields__) | {
    "email", "phone", "first_name", "last_name", "name", "date_of_birth", "birthday",
    "gender", "city", "state", "zip", "postal_code", "address",
}


def inbound_event(obj: Any, where: str = "event") -> InboundEvent:
    """One decoded JSON event as an ``InboundEvent``: known fields checked by type, unknown
    top-level fields kept as sent in ``passthrough`` (at most ``MAX_PASSTHROUGH_BYTES``).

    Raises ``InputError`` (422) naming ``where`` and the field.
    """
    if not isinstance(obj, dict):
        raise InputError(f"{where} must be a JSON object", 422)
    known: dict[str, Any] = {}
    unknown: dict[str, Any] = {}
    for name, value in obj.items():
        (known if name in _INBOUND_FIELDS else unknown)[name] = value
    misplaced = sorted(unknown.keys() & _CUSTOMER_KEYS)
    if misplaced:
        raise InputError(f"{where}.{misplaced[0]} is customer information: send it inside "
                         "user_data, where it is hashed", 422)
    if unknown:
        try:
            size = len(_encoder.encode(unknown))
        except RecursionError:
            raise InputError(f"{where} is nested too deeply", 422) from None
        if size > MAX_PASSTHROUGH_BYTES:
            raise InputError(
                f"{where}: the fields passed through unchecked ({', '.join(sorted(unknown))}) "
                f"take {size} bytes; at most {MAX_PASSTHROUGH_BYTES} are allowed", 422)
        known["passthrough"] = unknown
    try:
        return msgspec.convert(known, InboundEvent)
    except msgspec.ValidationError as exc:
        raise InputError(located(str(exc), where), 422) from None
    except RecursionError:
        raise InputError(f"{where} is nested too deeply", 422) from None


def located(message: str, where: str) -> str:
    """msgspec's "Expected `int` - at `$.user_data.em`" as "event.user_data.em: Expected int"."""
    text, _, path = message.partition(" - at `")
    text = text.replace("`", "")
    path = path.rstrip("`").removeprefix("$")
    return f"{where}{path}: {text}" if path else f"invalid {where}: {text}"


def _check_extensions(inbound: InboundEvent, where: str) -> None:
    """What the event rules cannot see on a ``MetaEvent``: the shape of pass-through fields.
    (``app_data`` is an event rule: ``relay.validation.app_problem``.)"""
    original = inbound.original_event_data or {}
    if not isinstance(original.get("event_name", ""), str):
        raise InputError(f"{where}.original_event_data.event_name must be a string", 422)
    original_time = original.get("event_time", 0)
    if isinstance(original_time, bool) or not isinstance(original_time, int):
        raise InputError(f"{where}.original_event_data.event_time must be Unix seconds", 422)


def new_event_id() -> str:
    """Unique, URL-safe and sortable by time (ms prefix), so logs read in order."""
    return f"{int(time.time() * 1000):x}{secrets.token_hex(8)}"


def hash_user_data(raw: InboundUserData | None, where: str = "event",
                   phone_region: str | None = None) -> UserData:
    """Normalize and hash the keys Meta wants hashed; copy the clear keys.

    ``phone_region`` (alpha-2) reads a phone number given without its country code, unless
    the event's own ``country`` names one. Raises ``InputError`` (422) naming ``where`` and the
    key when a value has no form Meta documents; the sentence never repeats the value.
    """
    if raw is None:
        return UserData()
    context = context_for(raw.country, phone_region)
    values: dict[str, Any] = {}
    for name in raw.__struct_fields__:
        value = getattr(raw, name)
        if value is None:
            continue
        if name in HASHED_KEYS:
            try:
                hashed = hash_user_field(name, value, context)
            except UnnormalizableValue as exc:
                raise InputError(f"{where}.user_data.{exc.key} {exc.expected}", 422,
                                 reason="malformed_user_data") from None
            if hashed is not None:
                values[name] = hashed
        elif isinstance(value, str) and value.strip():
            values[name] = value.strip()
    return UserData(**values)


def build_event(inbound: InboundEvent, *, now_s: float, max_age_days: int,
                max_future_skew_s: int, where: str = "event",
                phone_region: str | None = None) -> MetaEvent:
    """Check one inbound event and turn it into the hashed, Meta-ready form.

    The event rules are ``relay.validation``'s, the ones the relay checks again before sending;
    ``phone_region`` reads phone numbers given without a country code (``hash_user_data``).
    Raises ``InputError`` (422) naming ``where`` and the field.
    """
    event_time = int(now_s) if inbound.event_time is None else inbound.event_time
    if event_time > _MS_THRESHOLD:
        raise InputError(f"{where}.event_time must be Unix seconds, not milliseconds", 422)
    _check_extensions(inbound, where)
    event = MetaEvent(
        event_name=inbound.event_name.strip(),
        event_time=event_time,
        event_id=inbound.event_id or new_event_id(),
        action_source=inbound.action_source,
        user_data=hash_user_data(inbound.user_data, where, phone_region),
        event_source_url=inbound.event_source_url,
        referrer_url=inbound.referrer_url,
        custom_data=inbound.custom_data,
        opt_out=inbound.opt_out,
        data_processing_options=inbound.data_processing_options,
        data_processing_options_country=inbound.data_processing_options_country,
        data_processing_options_state=inbound.data_processing_options_state,
        **{name: getattr(inbound, name) for name in MetaExtensions.__struct_fields__},
    )
    problem = door_problem(event, now_s=now_s, max_age_days=max_age_days,
                           max_future_s=max_future_skew_s, has_click=bool(inbound.click_id))
    if problem is not None:
        raise InputError(problem.at(where), 422, reason=problem.reason)
    return event


def complete_from_click(event: MetaEvent, click: ClickContext) -> MetaEvent:
    """A redirect's own event as sent: the landing URL, referrer and UTMs it left to its click
    context filled in (where the event lacks them), then ``enrich_from_click``."""
    if click.page_url or click.referrer_url:
        event = msgspec.structs.replace(
            event,
            event_source_url=event.event_source_url or click.page_url,
            referrer_url=event.referrer_url or click.referrer_url,
            custom_data=event.custom_data or (dict(click.utm) if click.utm else None),
        )
    return enrich_from_click(event, click)


def enrich_from_click(event: MetaEvent, click: ClickContext) -> MetaEvent:
    """Fill fbc, fbp, IP and user agent from the click where the event lacks them."""
    ud = event.user_data
    filled = msgspec.structs.replace(
        ud,
        fbc=ud.fbc or click.fbc,
        fbp=ud.fbp or click.fbp,
        client_ip_address=ud.client_ip_address or click.client_ip_address,
        client_user_agent=ud.client_user_agent or click.client_user_agent,
    )
    return msgspec.structs.replace(event, user_data=filled)
