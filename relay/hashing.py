"""Normalization and SHA-256 hashing of customer information, as Meta's CAPI documents it.

Raw personal data is hashed in the collector, before anything is stored. A value that already
is 64 hex characters is taken as hashed and passed through (lowercased). Keys Meta wants in
clear (IP, user agent, fbc, fbp, ...) are never hashed. A value that cannot be brought into the
documented form (a birthdate that is not a year-first date, an unknown country) raises
``UnnormalizableValue`` instead of being hashed into something Meta can never match.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Callable
from datetime import date

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
# Year first only: 02/03/1990 is 3 February in the US and 2 March in Europe, and a guess would
# hash a date that never matches.
_BIRTHDATE_FORMS = (
    re.compile(r"(?P<y>[0-9]{4})(?P<m>[0-9]{2})(?P<d>[0-9]{2})"),
    re.compile(r"(?P<y>[0-9]{4})(?P<sep>[-/.])(?P<m>[0-9]{1,2})(?P=sep)(?P<d>[0-9]{1,2})"),
)
EARLIEST_BIRTH_YEAR = 1900
BIRTHDATE_EXPECTED = "must be a date as YYYY-MM-DD or YYYYMMDD, year 1900 to this year"
COUNTRY_EXPECTED = "must be an ISO 3166-1 country code such as 'us', or a country name"


class UnnormalizableValue(ValueError):
    """A value of ``key`` cannot be brought into the form Meta documents for it.

    ``expected`` says which form is wanted. Neither it nor the message repeats the value: that is
    personal data, and the message ends up in an HTTP answer or a log.
    """

    def __init__(self, key: str, expected: str) -> None:
        super().__init__(f"{key} {expected}")
        self.key = key
        self.expected = expected


def is_sha256_hex(value: str) -> bool:
    return bool(_HEX64.fullmatch(value))


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _letters_only(value: str) -> str:
    """Lowercase, punctuation and spaces removed, Unicode kept (fn, ln)."""
    value = unicodedata.normalize("NFC", value.strip().lower())
    return _PUNCT_SPACE.sub("", value)


def _without_accents(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _lookup_key(value: str) -> str:
    """How names are compared: ``Côte d'Ivoire``, ``cote divoire`` -> ``cotedivoire``."""
    return _without_accents(_letters_only(value))


# Names people and shop systems use that ISO 3166 (and so pycountry) does not: the United
# Kingdom's nations and nicknames, former names, endonyms seen in European shop backends.
COUNTRY_ALIASES = {
    "uk": "gb", "unitedkingdom": "gb", "greatbritain": "gb", "britain": "gb", "england": "gb",
    "scotland": "gb", "wales": "gb", "northernireland": "gb",
    "america": "us",
    "russia": "ru", "turkey": "tr", "holland": "nl", "thenetherlands": "nl", "korea": "kr",
    "macedonia": "mk", "ivorycoast": "ci", "swaziland": "sz", "burma": "mm",
    "capeverde": "cv", "easttimor": "tl", "palestine": "ps", "vatican": "va",
    "vaticancity": "va", "micronesia": "fm", "uae": "ae",
    "deutschland": "de", "osterreich": "at", "schweiz": "ch", "suisse": "ch", "espana": "es",
    "brasil": "br", "italia": "it", "nederland": "nl", "polska": "pl", "sverige": "se",
    "norge": "no", "danmark": "dk", "suomi": "fi", "belgique": "be", "belgie": "be",
}


@functools.cache
def _country_codes() -> dict[str, str]:
    """Each country's alpha-2 and alpha-3 codes and names (as lookup keys) -> its alpha-2."""
    import pycountry  # imported on first use: it costs ~30 ms and ~5 MB a process

    codes: dict[str, str] = dict(COUNTRY_ALIASES)
    for country in pycountry.countries:
        for field in ("alpha_2", "alpha_3", "name", "official_name", "common_name"):
            name = getattr(country, field, None)
            if name is not None:
                codes[_lookup_key(name)] = country.alpha_2.lower()
    return codes


@functools.cache
def _us_state_codes() -> dict[str, str]:
    """Names of the US states, DC and territories (as lookup keys) -> their 2-letter code."""
    import pycountry  # imported on first use, as above; the subdivision table adds ~30 ms, 5 MB

    return {
        _lookup_key(subdivision.name): subdivision.code.removeprefix("US-").lower()
        for subdivision in pycountry.subdivisions.get(country_code="US")
    }


def preload() -> None:
    """Load the country and US state tables now (a collector worker's start), not on the first
    request that needs them (about 60 ms and 10 MB)."""
    _country_codes()
    _us_state_codes()


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
    """2-letter code, lowercase; a US state's name becomes its code: ``New York`` -> ``ny``.

    Other regions keep the name, lowercase without punctuation or spaces, as Meta asks for
    states outside the US.
    """
    letters = _letters_only(value)
    if len(letters) <= 2:
        return letters  # a code already: the subdivision table is not needed
    return _us_state_codes().get(_without_accents(letters), letters)


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
    """ISO 3166-1 alpha-2, lowercase, from an alpha-2 or alpha-3 code or a country's name."""
    letters = _letters_only(value)
    if not letters:
        return ""
    code = _country_codes().get(_without_accents(letters))
    if code is None:
        raise UnnormalizableValue("country", COUNTRY_EXPECTED)
    return code


def normalize_birthdate(value: str) -> str:
    """``YYYYMMDD`` from a year-first date; day- or month-first dates are refused as ambiguous."""
    text = value.strip()
    if not _letters_only(text):
        return ""
    birthdate = _year_first_date(text)
    if birthdate is None:
        raise UnnormalizableValue("db", BIRTHDATE_EXPECTED)
    return birthdate.isoformat().replace("-", "")


def _year_first_date(text: str) -> date | None:
    """The calendar date ``text`` spells year first, with a plausible birth year, or ``None``."""
    match = next((m for form in _BIRTHDATE_FORMS if (m := form.fullmatch(text))), None)
    if match is None:
        return None
    try:
        parsed = date(int(match["y"]), int(match["m"]), int(match["d"]))
    except ValueError:  # 1990-02-30, month 13, ...
        return None
    return parsed if EARLIEST_BIRTH_YEAR <= parsed.year <= date.today().year else None


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
    """Hash one value of a hashed key; ``None`` when nothing is left after normalizing.

    Raises ``UnnormalizableValue`` when the value has no form Meta documents (db, country).
    """
    if is_sha256_hex(value.strip()):
        return value.strip().lower()
    normalized = NORMALIZERS[key](value)
    if not normalized:
        return None
    return sha256_hex(normalized)


def hash_user_field(key: str, value: str | list[str]) -> str | list[str] | None:
    """Hash a single value or a list of values of one ``user_data`` key.

    One value that cannot be normalized rejects the whole field (``UnnormalizableValue``).
    """
    if isinstance(value, list):
        hashed = [h for v in value if (h := hash_value(key, v)) is not None]
        return hashed or None
    return hash_value(key, value)
