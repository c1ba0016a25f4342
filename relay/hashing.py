"""Normalization and SHA-256 hashing of customer information, as Meta's CAPI documents it.

Raw personal data is hashed in the collector, before anything is stored. A value that already
is 64 hex characters is taken as hashed and passed through (lowercased). Keys Meta wants in
clear (IP, user agent, fbc, fbp, ...) are never hashed.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable

HASHED_KEYS = frozenset(
    {"em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country", "external_id"}
)
CLEAR_KEYS = frozenset(
    {
        "client_ip_address", "client_user_agent", "fbc", "fbp", "subscription_id",
        "fb_login_id", "lead_id", "anon_id", "madid", "page_id", "page_scoped_user_id",
        "ctwa_clid", "ig_account_id", "ig_sid",
    }
)

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_NON_DIGITS = re.compile(r"\D+")
_PUNCT_SPACE = re.compile(r"[\W_]+", re.UNICODE)
_DIGITS = re.compile(r"\d+")
_DATE_FORMS = (
    re.compile(r"^(?P<y>\d{4})-?(?P<m>\d{2})-?(?P<d>\d{2})$"),
    re.compile(r"^(?P<y>\d{4})/(?P<m>\d{1,2})/(?P<d>\d{1,2})$"),
)


def is_sha256_hex(value: str) -> bool:
    return bool(_HEX64.fullmatch(value))


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _letters_only(value: str) -> str:
    """Lowercase, punctuation and spaces removed, Unicode kept (fn, ln)."""
    value = unicodedata.normalize("NFC", value.strip().lower())
    return _PUNCT_SPACE.sub("", value)


def normalize_email(value: str) -> str:
    return value.strip().lower()


def normalize_phone(value: str) -> str:
    """Digits only, with country code, no leading zeros: ``+1 (650)555-1212`` -> ``16505551212``.

    A country code cannot be invented: callers must include it; leading ``00`` and ``0`` are
    dropped as Meta asks.
    """
    return _NON_DIGITS.sub("", value).lstrip("0")


def normalize_name(value: str) -> str:
    return _letters_only(value)


def normalize_city(value: str) -> str:
    """Like a name, and without digits: ``New York 10001`` -> ``newyork``."""
    return _DIGITS.sub("", _letters_only(value))


def normalize_state(value: str) -> str:
    return _letters_only(value)


def normalize_gender(value: str) -> str:
    v = value.strip().lower()
    return v[:1] if v[:1] in ("f", "m") else ""  # anything else is not a gender Meta knows


def normalize_zip(value: str) -> str:
    v = value.strip().lower().replace(" ", "").replace("-", "")
    # US ZIP+4 ("94025-1234" -> "940251234"): Meta wants the first 5 digits.
    if v.isdigit() and len(v) == 9:
        return v[:5]
    return v


def normalize_country(value: str) -> str:
    return _letters_only(value)


def normalize_birthdate(value: str) -> str:
    v = value.strip()
    for form in _DATE_FORMS:
        match = form.match(v)
        if match:
            return f"{match['y']}{int(match['m']):02d}{int(match['d']):02d}"
    return _NON_DIGITS.sub("", v)


def normalize_external_id(value: str) -> str:
    return value.strip().lower()


NORMALIZERS: dict[str, Callable[[str], str]] = {
    "em": normalize_email,
    "ph": normalize_phone,
    "fn": normalize_name,
    "ln": normalize_name,
    "db": normalize_birthdate,
    "ge": normalize_gender,
    "ct": normalize_city,
    "st": normalize_state,
    "zp": normalize_zip,
    "country": normalize_country,
    "external_id": normalize_external_id,
}


def hash_value(key: str, value: str) -> str | None:
    """Hash one value of a hashed key; ``None`` when nothing is left after normalizing."""
    if is_sha256_hex(value.strip()):
        return value.strip().lower()
    normalized = NORMALIZERS[key](value)
    if not normalized:
        return None
    return sha256_hex(normalized)


def hash_user_field(key: str, value: str | list[str]) -> str | list[str] | None:
    """Hash a single value or a list of values of one ``user_data`` key."""
    if isinstance(value, list):
        hashed = [h for v in value if (h := hash_value(key, v)) is not None]
        return hashed or None
    return hash_value(key, value)
