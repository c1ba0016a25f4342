"""Pure checks of a Conversions API request body, following Meta's Conversions API documentation.

The rules, as this module applies them, are listed in docs/fake-meta.md, Validation rules.

``validate_payload`` takes the request's parameters (a decoded JSON body, or form/query fields
whose ``data`` is a JSON string) and returns an ``EventBatch`` or raises ``MetaError`` code 100
for the first broken rule, naming the field as ``data[3].user_data.em``. One bad event rejects
the whole batch, as Meta does. Error texts never echo the offending value: it may be personal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from fakemeta._errors import (
    SUBCODE_BAD_FBC,
    SUBCODE_MALFORMED,
    SUBCODE_TOO_LITTLE_USER_DATA,
    SUBCODE_TOO_OLD,
    MetaError,
    invalid_parameter,
)

MAX_EVENTS = 1000
MAX_AGE_S = 7 * 24 * 3600
MAX_FUTURE_S = 10 * 60
# Unix seconds reach 10^10 in the year 2286; anything above is milliseconds (or nonsense).
MAX_PLAUSIBLE_SECONDS = 10_000_000_000

ACTION_SOURCES = frozenset(
    {
        "email",
        "website",
        "app",
        "phone_call",
        "chat",
        "physical_store",
        "system_generated",
        "business_messaging",
        "other",
    }
)
HASHED_KEYS = ("em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country",
               "f5first", "f5last", "fi", "dobd", "dobm", "doby")
# An event whose user_data keys all fall inside one of these cannot be matched (2804050).
TOO_LITTLE_USER_DATA = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)

EXTINFO_LENGTH = 16
EXTINFO_VERSIONS = ("a2", "i2")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# fb.{subdomain_index}.{creation_time_ms}.{fbclid}; fbclid is opaque (may hold dots).
_FBC = re.compile(r"fb\.(\d+)\.(\d+)\.(\S+)")
_FBP = re.compile(r"fb\.\d+\.\d+\.\d+")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_MIN_MS_TIMESTAMP = 1_000_000_000_000  # Sep 2001 in ms: any real fbc was made after it


@dataclass(frozen=True)
class EventBatch:
    """A request that passed every check: its events as sent, plus the batch-level fields."""

    events: list[dict[str, Any]]
    test_event_code: str | None = None
    partner_agent: str | None = None


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The parameters of a JSON body; an empty body has none."""
    if not raw.strip():
        return {}
    try:
        params = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise invalid_parameter("The request body is not valid JSON.") from None
    if not isinstance(params, dict):
        raise invalid_parameter("The request body must be a JSON object.")
    return params


def validate_payload(params: Mapping[str, Any], *, now: float) -> EventBatch:
    """Check a whole request's parameters at wall-clock time ``now`` (Unix seconds)."""
    events = _decode_data(params.get("data"))
    if not 1 <= len(events) <= MAX_EVENTS:
        raise invalid_parameter(
            f"data must hold between 1 and {MAX_EVENTS} events, got {len(events)}.",
            title="Invalid Number Of Events",
        )
    test_event_code = _optional_str(params, "test_event_code")
    partner_agent = _optional_str(params, "partner_agent")
    for index, event in enumerate(events):
        validate_event(event, index=index, now=now)
    return EventBatch(events=events, test_event_code=test_event_code, partner_agent=partner_agent)


def validate_event(event: Any, *, index: int, now: float) -> None:
    """Check one event; ``index`` is its place in ``data`` and names it in the error."""
    where = f"data[{index}]"
    if not isinstance(event, dict):
        raise invalid_parameter(f"{where} must be an object.")
    _check_required_str(event, "event_name", where)
    _check_event_time(event.get("event_time"), f"{where}.event_time", now)
    action_source = event.get("action_source")
    if action_source is None:
        raise _missing(f"{where}.action_source")
    if action_source not in ACTION_SOURCES:
        allowed = ", ".join(sorted(ACTION_SOURCES))
        raise invalid_parameter(f"{where}.action_source must be one of: {allowed}.")
    event_id = event.get("event_id")
    if event_id is not None and (isinstance(event_id, bool) or not isinstance(event_id, str | int)):
        raise invalid_parameter(f"{where}.event_id must be a string.")
    user_data = event.get("user_data")
    if user_data is None:
        raise _missing(f"{where}.user_data")
    if not isinstance(user_data, dict):
        raise invalid_parameter(f"{where}.user_data must be an object.")
    if action_source == "website":
        _check_required_str(event, "event_source_url", where)
        _check_required_str(user_data, "client_user_agent", f"{where}.user_data")
    if action_source == "app":
        validate_app_data(event.get("app_data"), where=f"{where}.app_data")
    validate_user_data(user_data, where=f"{where}.user_data")
    custom_data = event.get("custom_data")
    if custom_data is not None:
        validate_custom_data(custom_data, where=f"{where}.custom_data")


def validate_user_data(user_data: dict[str, Any], *, where: str) -> None:
    """Hashed keys are SHA-256 hex, fbc/fbp well formed, and enough keys to match a person."""
    for key in HASHED_KEYS:
        for value in _values(user_data, key):
            if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
                raise invalid_parameter(
                    f"{where}.{key} must be a SHA-256 hash: 64 lowercase hex characters.",
                    title="Malformed Customer Information",
                    subcode=SUBCODE_MALFORMED,
                )
    for value in _values(user_data, "external_id"):
        if not isinstance(value, str) or not value:
            raise invalid_parameter(
                f"{where}.external_id must be a non-empty string or a list of them.",
                title="Malformed Customer Information",
                subcode=SUBCODE_MALFORMED,
            )
    fbc = user_data.get("fbc")
    if fbc is not None and not _is_valid_fbc(fbc):
        raise invalid_parameter(
            f"{where}.fbc must look like fb.1.<creation time in ms>.<fbclid>.",
            title="Invalid fbc Parameter",
            subcode=SUBCODE_BAD_FBC,
        )
    fbp = user_data.get("fbp")
    if fbp is not None and not (isinstance(fbp, str) and _FBP.fullmatch(fbp)):
        raise invalid_parameter(
            f"{where}.fbp must look like fb.1.<creation time in ms>.<random digits>.",
            title="Malformed Customer Information",
            subcode=SUBCODE_MALFORMED,
        )
    present = {key for key, value in user_data.items() if value not in (None, "", [])}
    if not present or any(present <= weak for weak in TOO_LITTLE_USER_DATA):
        raise invalid_parameter(
            f"{where} holds too little customer information to match anyone; add em, ph, "
            "external_id, fbc, fbp or client_ip_address.",
            title="Not Enough Customer Information",
            subcode=SUBCODE_TOO_LITTLE_USER_DATA,
        )


def validate_app_data(app_data: Any, *, where: str) -> None:
    """App events need ``app_data`` with both tracking flags and a version-tagged ``extinfo``
    of 16 entries (Meta's App Data Parameters; empty strings stand for unknown values)."""
    if app_data is None:
        raise _missing(where)
    if not isinstance(app_data, dict):
        raise invalid_parameter(f"{where} must be an object.")
    for flag in ("advertiser_tracking_enabled", "application_tracking_enabled"):
        value = app_data.get(flag)
        if value is None:
            raise _missing(f"{where}.{flag}")
        if value not in (True, False, 0, 1):
            raise invalid_parameter(f"{where}.{flag} must be true or false (or 1 or 0).")
    extinfo = app_data.get("extinfo")
    if extinfo is None:
        raise _missing(f"{where}.extinfo")
    if not (isinstance(extinfo, list) and len(extinfo) == EXTINFO_LENGTH
            and extinfo[0] in EXTINFO_VERSIONS):
        raise invalid_parameter(
            f"{where}.extinfo must be an array of {EXTINFO_LENGTH} values starting with "
            "the version, a2 (Android) or i2 (iOS).", title="Invalid Extended Device Info",
        )


def validate_custom_data(custom_data: Any, *, where: str) -> None:
    """currency is three letters (ISO 4217), value a number."""
    if not isinstance(custom_data, dict):
        raise invalid_parameter(f"{where} must be an object.")
    currency = custom_data.get("currency")
    if currency is not None and not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        raise invalid_parameter(f"{where}.currency must be a 3-letter ISO 4217 code.")
    value = custom_data.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise invalid_parameter(f"{where}.value must be a number.")


def _decode_data(data: Any) -> list[Any]:
    if data is None:
        raise _missing("data")
    if isinstance(data, str | bytes):
        # Form fields and query strings carry data as a JSON string.
        try:
            data = msgspec.json.decode(data)
        except msgspec.DecodeError:
            raise invalid_parameter("data must be a JSON array of events.") from None
    if not isinstance(data, list):
        raise invalid_parameter("data must be an array of events.")
    return [_decode_event(event, index) for index, event in enumerate(data)]


def _decode_event(event: Any, index: int) -> Any:
    """An element of ``data``: an object, or (as Meta's SDKs send it, ``list<string>``) the
    JSON text of one."""
    if not isinstance(event, str):
        return event
    try:
        return msgspec.json.decode(event)
    except msgspec.DecodeError:
        message = f"data[{index}] must be an event object or its JSON text."
        raise invalid_parameter(message) from None


def _check_event_time(value: Any, where: str, now: float) -> None:
    if value is None:
        raise _missing(where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_parameter(f"{where} must be a Unix timestamp in whole seconds.")
    if value > MAX_PLAUSIBLE_SECONDS:
        raise invalid_parameter(
            f"{where} looks like milliseconds; send Unix seconds.", title="Invalid Event Time"
        )
    if value <= 0:
        raise invalid_parameter(f"{where} must be a positive Unix timestamp in seconds.")
    if now - value > MAX_AGE_S:
        raise invalid_parameter(
            f"{where} is more than 7 days in the past; events must be sent within 7 days.",
            title="Event Timestamp Too Old",
            subcode=SUBCODE_TOO_OLD,
        )
    if value - now > MAX_FUTURE_S:
        raise invalid_parameter(
            f"{where} is more than {MAX_FUTURE_S // 60} minutes in the future.",
            title="Event Timestamp In The Future",
        )


def _check_required_str(container: dict[str, Any], key: str, where: str) -> None:
    value = container.get(key)
    if value is None or value == "":
        raise _missing(f"{where}.{key}")
    if not isinstance(value, str):
        raise invalid_parameter(f"{where}.{key} must be a string.")


def _values(user_data: dict[str, Any], key: str) -> list[Any]:
    """A user_data key's values: Meta takes a single value or a list; null or "" is absent."""
    value = user_data.get(key)
    if value is None or value == "":
        return []
    return value if isinstance(value, list) else [value]


def _is_valid_fbc(fbc: Any) -> bool:
    if not isinstance(fbc, str):
        return False
    match = _FBC.fullmatch(fbc)
    return match is not None and int(match.group(2)) >= _MIN_MS_TIMESTAMP


def _optional_str(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid_parameter(f"{key} must be a string.")
    return value


def _missing(field: str) -> MetaError:
    return invalid_parameter(
        f"The parameter {field} is required.", title="Missing Required Parameter"
    )
