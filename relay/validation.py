"""Checks an event against Meta's rules before it is sent, so one bad event never sinks a batch.

``problem`` returns a sentence describing why Meta would reject the event, or None.
"""

from __future__ import annotations

import re

from relay.events import ACTION_SOURCES, SECONDS_IN_DAY, MetaEvent, UserData, app_data_problem
from relay.hashing import HASHED_KEYS, is_sha256_hex

_FBC = re.compile(r"^fb\.\d+\.\d{10,16}\.\S+$")
_FBP = re.compile(r"^fb\.\d+\.\d{10,16}\.\d+$")
# Meta rejects events whose customer keys are only one of these combinations (2804050).
_TOO_LITTLE = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)
EXPIRY_MARGIN_S = 3600  # dead-letter an hour before Meta's limit rather than race it


def present_keys(user_data: UserData) -> frozenset[str]:
    return frozenset(k for k in user_data.__struct_fields__ if getattr(user_data, k) is not None)


def is_expired(event: MetaEvent, now_s: float, max_age_days: int) -> bool:
    return event.event_time < now_s - max_age_days * SECONDS_IN_DAY + EXPIRY_MARGIN_S


def problem(event: MetaEvent, now_s: float, max_age_days: int = 7) -> str | None:
    if not event.event_name:
        return "event_name is missing"
    if is_expired(event, now_s, max_age_days):
        return f"expired: event_time is (almost) older than {max_age_days} days"
    if event.event_time > now_s + SECONDS_IN_DAY:
        return "event_time is more than a day in the future"
    if event.action_source not in ACTION_SOURCES:
        return f"action_source {event.action_source!r} is not one Meta accepts"
    if event.action_source == "app":
        app_problem = app_data_problem(event.app_data)
        if app_problem:
            return app_problem
    ud = event.user_data
    keys = present_keys(ud)
    if not keys:
        return "user_data has no customer information"
    if any(keys <= combo for combo in _TOO_LITTLE):
        return f"user_data has too little customer information ({', '.join(sorted(keys))})"
    if event.action_source == "website":
        if not event.event_source_url:
            return "website events need event_source_url"
        if not ud.client_user_agent:
            return "website events need user_data.client_user_agent"
    for key in HASHED_KEYS & keys:
        values = getattr(ud, key)
        for value in values if isinstance(values, list) else [values]:
            if key == "external_id":
                continue  # hashing recommended, not required
            if not is_sha256_hex(value):
                return f"user_data.{key} is not a SHA-256 hex digest"
    if ud.fbc is not None and not _FBC.match(ud.fbc):
        return "user_data.fbc is not of the form fb.<index>.<ms>.<fbclid>"
    if ud.fbp is not None and not _FBP.match(ud.fbp):
        return "user_data.fbp is not of the form fb.<index>.<ms>.<random>"
    return None
