"""The event model: what clients send, what is stored in Redis, what Meta receives.

``InboundEvent`` is the public API shape (raw or hashed personal data). ``build_event`` turns it
into a ``MetaEvent`` whose ``user_data`` is already normalized and hashed, so raw personal data
never reaches Redis, the spool or a log line. An ``Envelope`` wraps a ``MetaEvent`` with what the
relay needs (pixel, click to enrich from, when it was received) and is the unit stored in the
inbox and carried inside batch messages.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

import msgspec
from msgspec import Struct

from relay.errors import InputError
from relay.hashing import HASHED_KEYS, UnnormalizableValue, hash_user_field

ACTION_SOURCES = frozenset(
    {
        "email", "website", "app", "phone_call", "chat", "physical_store",
        "system_generated", "business_messaging", "other",
    }
)
MAX_EVENTS_PER_REQUEST = 1000
MAX_PASSTHROUGH_BYTES = 16_384  # per event: the unknown fields, JSON-encoded
EXTINFO_LENGTH = 16  # Meta's App Data Parameters: extinfo has 16 entries, the first a2 or i2
EXTINFO_VERSIONS = ("a2", "i2")
SECONDS_IN_DAY = 86_400
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

    @property
    def dedup_key(self) -> str:
        return f"{self.pixel_id}:{self.event.event_name}:{self.event.event_id}"


class ClickContext(Struct, array_like=True):
    """What a redirect learned about the visitor; later server events refer to it by click_id.

    Kept for ``collector.click_ttl_days`` per click, so it is stored compactly (a JSON array) and
    holds only what enrichment and attribution need; the landing URL and referrer travel with
    the click's own PageView.
    """

    click_id: str
    slug: str
    time_ms: int
    fbc: str | None = None
    fbp: str | None = None
    client_ip_address: str | None = None
    client_user_agent: str | None = None
    utm: dict[str, str] | None = None


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(Envelope)
_click_decoder = msgspec.json.Decoder(ClickContext)


def encode(obj: Struct) -> bytes:
    return _encoder.encode(obj)


def decode_envelope(data: bytes | str) -> Envelope:
    return _envelope_decoder.decode(data)


def decode_click(data: bytes | str) -> ClickContext:
    return _click_decoder.decode(data)


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


def app_data_problem(app_data: dict[str, Any] | None) -> str | None:
    """Why an app event's ``app_data`` falls short of what Meta requires, or None."""
    if app_data is None:
        return "app_data is required for app events"
    for flag in ("advertiser_tracking_enabled", "application_tracking_enabled"):
        if app_data.get(flag) not in (True, False, 0, 1):
            return f"app_data.{flag} must be true or false (or 1 or 0)"
    extinfo = app_data.get("extinfo")
    if not (isinstance(extinfo, list) and len(extinfo) == EXTINFO_LENGTH
            and extinfo[0] in EXTINFO_VERSIONS):
        return (f"app_data.extinfo must be an array of {EXTINFO_LENGTH} values starting with "
                "a2 (Android) or i2 (iOS)")
    return None


def _check_extensions(inbound: InboundEvent, where: str) -> None:
    if inbound.action_source == "app":
        problem = app_data_problem(inbound.app_data)
        if problem:
            raise InputError(f"{where}.{problem}", 422)
    original = inbound.original_event_data or {}
    if not isinstance(original.get("event_name", ""), str):
        raise InputError(f"{where}.original_event_data.event_name must be a string", 422)
    original_time = original.get("event_time", 0)
    if isinstance(original_time, bool) or not isinstance(original_time, int):
        raise InputError(f"{where}.original_event_data.event_time must be Unix seconds", 422)


def new_event_id() -> str:
    """Unique, URL-safe and sortable by time (ms prefix), so logs read in order."""
    return f"{int(time.time() * 1000):x}{secrets.token_hex(8)}"


def hash_user_data(raw: InboundUserData | None, where: str = "event") -> UserData:
    """Normalize and hash the keys Meta wants hashed; copy the clear keys.

    Raises ``InputError`` (422) naming ``where`` and the key when a value has no form Meta
    documents; the sentence never repeats the value.
    """
    if raw is None:
        return UserData()
    values: dict[str, Any] = {}
    for name in raw.__struct_fields__:
        value = getattr(raw, name)
        if value is None:
            continue
        if name in HASHED_KEYS:
            try:
                hashed = hash_user_field(name, value)
            except UnnormalizableValue as exc:
                raise InputError(f"{where}.user_data.{exc.key} {exc.expected}", 422,
                                 reason="malformed_user_data") from None
            if hashed is not None:
                values[name] = hashed
        elif isinstance(value, str) and value.strip():
            values[name] = value.strip()
    return UserData(**values)


def build_event(inbound: InboundEvent, *, now_s: float, max_age_days: int,
                max_future_skew_s: int, where: str = "event") -> MetaEvent:
    """Check one inbound event and turn it into the hashed, Meta-ready form.

    Raises ``InputError`` (422) naming ``where`` and the field.
    """
    name = inbound.event_name.strip()
    if not name or len(name) > 100:
        raise InputError(f"{where}.event_name must be 1 to 100 characters", 422)
    if ":" in name:  # it is part of the dedup key pixel:event_name:event_id, split at ':'
        raise InputError(f"{where}.event_name must not contain ':'", 422)
    event_time = int(now_s) if inbound.event_time is None else inbound.event_time
    if event_time > _MS_THRESHOLD:
        raise InputError(f"{where}.event_time must be Unix seconds, not milliseconds", 422)
    if event_time < now_s - max_age_days * SECONDS_IN_DAY:
        raise InputError(f"{where}.event_time is older than {max_age_days} days", 422,
                         reason="event_too_old")
    if event_time > now_s + max_future_skew_s:
        raise InputError(f"{where}.event_time is in the future", 422)
    if inbound.action_source not in ACTION_SOURCES:
        raise InputError(
            f"{where}.action_source must be one of {', '.join(sorted(ACTION_SOURCES))}", 422
        )
    event_id = inbound.event_id or new_event_id()
    if len(event_id) > 200:
        raise InputError(f"{where}.event_id is longer than 200 characters", 422)
    currency = (inbound.custom_data or {}).get("currency")
    if currency is not None and not (isinstance(currency, str) and len(currency) == 3
                                     and currency.isalpha()):
        raise InputError(f"{where}.custom_data.currency must be a 3-letter ISO 4217 code", 422)
    value = (inbound.custom_data or {}).get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InputError(f"{where}.custom_data.value must be a number", 422)
    _check_extensions(inbound, where)
    user_data = hash_user_data(inbound.user_data, where)
    if inbound.action_source == "website" and not inbound.event_source_url:
        raise InputError(f"{where}.event_source_url is required for website events", 422)
    if not _has_user_keys(user_data) and not inbound.click_id:
        raise InputError(f"{where}.user_data needs at least one customer key or a click_id", 422)
    return MetaEvent(
        event_name=name,
        event_time=event_time,
        event_id=event_id,
        action_source=inbound.action_source,
        user_data=user_data,
        event_source_url=inbound.event_source_url,
        referrer_url=inbound.referrer_url,
        custom_data=inbound.custom_data,
        opt_out=inbound.opt_out,
        data_processing_options=inbound.data_processing_options,
        data_processing_options_country=inbound.data_processing_options_country,
        data_processing_options_state=inbound.data_processing_options_state,
        app_data=inbound.app_data,
        original_event_data=inbound.original_event_data,
        attribution_data=inbound.attribution_data,
        customer_segmentation=inbound.customer_segmentation,
        messaging_channel=inbound.messaging_channel,
        passthrough=inbound.passthrough,
    )


def _has_user_keys(user_data: UserData) -> bool:
    return any(getattr(user_data, k) is not None for k in user_data.__struct_fields__)


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
