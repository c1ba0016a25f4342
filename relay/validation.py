"""The event rules: what Meta rejects an event for, in one place both sides call.

The collector calls ``door_problem`` on every event it is about to store and answers 422 with
the sentence; the relay calls ``problem`` on every event it is about to send and dead-letters
what fails, so one bad event never sinks a batch. Each rule is one function returning a
``Problem`` (a field path and what is wrong with it) or ``None``, so the two sides cannot drift:
what the collector accepts today the relay does not dead-letter tomorrow, except what only the
relay can know (a click that expired before enrichment, an event that waited too long).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from relay.hashing import HASHED_KEYS, is_sha256_hex

if TYPE_CHECKING:  # relay.events imports this module
    from relay.events import MetaEvent, UserData

ACTION_SOURCES = frozenset(
    {
        "email", "website", "app", "phone_call", "chat", "physical_store",
        "system_generated", "business_messaging", "other",
    }
)
SECONDS_IN_DAY = 86_400
EXPIRY_MARGIN_S = 3600  # refuse or dead-letter an hour before Meta's limit rather than race it
RELAY_MAX_FUTURE_S = SECONDS_IN_DAY  # the relay's tolerance; the collector's is a setting
EXTINFO_LENGTH = 16  # Meta's App Data Parameters: extinfo has 16 entries, the first a2 or i2
EXTINFO_VERSIONS = ("a2", "i2")
MAX_EVENT_NAME_CHARS = 100
MAX_EVENT_ID_CHARS = 200
DATA_PROCESSING_OPTIONS = frozenset({"LDU"})

FBC_FORM = re.compile(r"^fb\.\d+\.\d{10,16}\.\S+$")
FBP_FORM = re.compile(r"^fb\.\d+\.\d{10,16}\.\d+$")
# Meta rejects events whose customer keys are only one of these combinations (2804050).
TOO_LITTLE = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)
# What the relay adds from a click (``enrich_from_click``): a redirect always records these.
FROM_A_CLICK = frozenset({"client_user_agent", "client_ip_address", "fbp"})


@dataclass(frozen=True, slots=True)
class Problem:
    """Why Meta would reject an event: ``field`` (a path such as ``user_data.fbc``) ``text``.

    ``reason`` names the rule for a boundary that answers per rule (the Graph endpoint maps
    ``event_too_old`` and ``bad_fbc`` to Meta's subcodes).
    """

    field: str
    text: str
    kind: Literal["invalid", "expired"] = "invalid"
    reason: str | None = None

    def __str__(self) -> str:
        return f"{self.field} {self.text}"

    def at(self, where: str) -> str:
        """The sentence for a 422: ``events[3].user_data.fbc is not of the form ...``."""
        return f"{where}.{self}"


def is_valid_fbc(value: str | None) -> bool:
    return bool(value) and FBC_FORM.match(value or "") is not None


def is_valid_fbp(value: str | None) -> bool:
    return bool(value) and FBP_FORM.match(value or "") is not None


def present_keys(user_data: UserData) -> frozenset[str]:
    return frozenset(k for k in user_data.__struct_fields__ if getattr(user_data, k) is not None)


def is_expired(event: MetaEvent, now_s: float, max_age_days: int) -> bool:
    return event.event_time < now_s - max_age_days * SECONDS_IN_DAY + EXPIRY_MARGIN_S


# -- one function per rule ------------------------------------------------------------------------
def event_name_problem(name: str) -> Problem | None:
    if not name:
        return Problem("event_name", "is missing")
    if len(name) > MAX_EVENT_NAME_CHARS:
        return Problem("event_name", f"is longer than {MAX_EVENT_NAME_CHARS} characters")
    if ":" in name:  # it is part of the dedup key pixel:event_name:event_id, split at ':'
        return Problem("event_name", "must not contain ':'")
    return None


def event_id_problem(event_id: str) -> Problem | None:
    if len(event_id) > MAX_EVENT_ID_CHARS:
        return Problem("event_id", f"is longer than {MAX_EVENT_ID_CHARS} characters")
    return None


def event_time_problem(event: MetaEvent, now_s: float, max_age_days: int,
                       max_future_s: int) -> Problem | None:
    if is_expired(event, now_s, max_age_days):
        return Problem("event_time", f"is (almost) older than {max_age_days} days", "expired",
                       reason="event_too_old")
    if event.event_time > now_s + max_future_s:
        return Problem("event_time", "is in the future")
    return None


def action_source_problem(action_source: str) -> Problem | None:
    if action_source not in ACTION_SOURCES:
        return Problem("action_source", f"must be one of {', '.join(sorted(ACTION_SOURCES))}")
    return None


def custom_data_problem(custom_data: dict[str, Any] | None) -> Problem | None:
    currency = (custom_data or {}).get("currency")
    if currency is not None and not (isinstance(currency, str) and len(currency) == 3
                                     and currency.isalpha()):
        return Problem("custom_data.currency", "must be a 3-letter ISO 4217 code")
    value = (custom_data or {}).get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        return Problem("custom_data.value", "must be a number")
    return None


def data_processing_problem(event: MetaEvent) -> Problem | None:
    options = event.data_processing_options
    if options is not None and not set(options) <= DATA_PROCESSING_OPTIONS:
        return Problem("data_processing_options",
                       "may hold only 'LDU' (Limited Data Use), or nothing")
    for name in ("data_processing_options_country", "data_processing_options_state"):
        number = getattr(event, name)
        if number is not None and number < 0:
            return Problem(name, "must be 0 (Meta geolocates) or a code Meta documents")
    return None


MAX_TEST_EVENT_CODE_CHARS = 64


def problem_with_test_event_code(code: object) -> str | None:
    """Why ``code`` cannot be sent as a ``test_event_code`` (Events Manager gives codes such as
    ``TEST12345``), or ``None``; ``None`` itself is no code, which is fine."""
    if code is None:
        return None
    if not isinstance(code, str) or not code.strip():
        return "must be a non-empty string, such as TEST12345 from Events Manager's Test Events"
    if len(code) > MAX_TEST_EVENT_CODE_CHARS or not code.isprintable():
        return f"must be at most {MAX_TEST_EVENT_CODE_CHARS} printable characters"
    return None


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


def app_problem(event: MetaEvent) -> Problem | None:
    if event.action_source != "app":
        return None
    found = app_data_problem(event.app_data)
    if found is None:
        return None
    field, _, text = found.partition(" ")
    return Problem(field, text)


def customer_keys_problem(keys: frozenset[str]) -> Problem | None:
    if not keys:
        return Problem("user_data", "has no customer information: send a customer key such "
                                    "as em or ph, or a click_id")
    if any(keys <= combo for combo in TOO_LITTLE):
        return Problem("user_data", "has too little customer information to match anyone "
                                    f"({', '.join(sorted(keys))})")
    return None


def website_problem(event: MetaEvent, keys: frozenset[str]) -> Problem | None:
    if event.action_source != "website":
        return None
    if not event.event_source_url:
        return Problem("event_source_url", "is required for website events")
    if "client_user_agent" not in keys:
        return Problem("user_data.client_user_agent", "is required for website events")
    return None


def hashed_form_problem(user_data: UserData, keys: Iterable[str]) -> Problem | None:
    for key in sorted(HASHED_KEYS.intersection(keys) - {"external_id"}):  # external_id: optional
        values = getattr(user_data, key)
        if not all(is_sha256_hex(v) for v in (values if isinstance(values, list) else [values])):
            return Problem(f"user_data.{key}", "is not a SHA-256 hex digest")
    return None


def cookie_problem(user_data: UserData) -> Problem | None:
    if user_data.fbc is not None and not is_valid_fbc(user_data.fbc):
        return Problem("user_data.fbc", "is not of the form fb.<index>.<ms>.<fbclid>",
                       reason="bad_fbc")
    if user_data.fbp is not None and not is_valid_fbp(user_data.fbp):
        return Problem("user_data.fbp", "is not of the form fb.<index>.<ms>.<random>")
    return None


# -- the two sides --------------------------------------------------------------------------------
def door_problem(event: MetaEvent, *, now_s: float, max_age_days: int, max_future_s: int,
                 has_click: bool) -> Problem | None:
    """The collector's check: every rule, the first one ``event`` breaks.

    ``has_click``: the relay will fill user agent, IP and fbp from the event's click first, so
    the rules about those cannot be decided at the door.
    """
    return (event_name_problem(event.event_name)
            or event_id_problem(event.event_id)
            or custom_data_problem(event.custom_data)
            or sending_problem(event, now_s=now_s, max_age_days=max_age_days,
                               max_future_s=max_future_s, has_click=has_click))


def sending_problem(event: MetaEvent, *, now_s: float, max_age_days: int, max_future_s: int,
                    has_click: bool = False) -> Problem | None:
    """The rules that can change between the door and Meta (time, enrichment) or that only
    the relay sees broken (an event injected by a tool): checked on both sides.

    The relay does not check ``custom_data`` again: the door refused what it can see, and an
    event Meta refuses for it is isolated by splitting the batch (``relay.delivery``).
    """
    keys = present_keys(event.user_data)
    expected = keys | FROM_A_CLICK if has_click else keys
    return (event_name_problem(event.event_name)
            or event_time_problem(event, now_s, max_age_days, max_future_s)
            or action_source_problem(event.action_source)
            or app_problem(event)
            or data_processing_problem(event)
            or customer_keys_problem(expected)
            or website_problem(event, expected)
            or hashed_form_problem(event.user_data, keys)
            or cookie_problem(event.user_data))


def problem(event: MetaEvent, now_s: float, max_age_days: int = 7) -> str | None:
    """The relay's check before sending: a sentence for the dead letter, or ``None``.

    An expired event's sentence starts with ``expired:`` (the dead letter's kind).
    """
    found = sending_problem(event, now_s=now_s, max_age_days=max_age_days,
                            max_future_s=RELAY_MAX_FUTURE_S)
    if found is None:
        return None
    return f"expired: {found}" if found.kind == "expired" else str(found)
