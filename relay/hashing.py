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
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from relay import gender_words

if TYPE_CHECKING:  # imported on first use: the relay's workers and tools never hash
    import phonenumbers

# The older customer keys Meta's SDKs still send (first 5 letters of the first and last name,
# first initial, day, month and year of birth), hashed like the others.
LEGACY_KEYS = frozenset({"f5first", "f5last", "fi", "dobd", "dobm", "doby"})
HASHED_KEYS = frozenset(
    {"em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country", "external_id"}
) | LEGACY_KEYS
CLEAR_KEYS = frozenset(
    {
        "client_ip_address", "client_user_agent", "fbc", "fbp", "subscription_id",
        "fb_login_id", "lead_id", "anon_id", "madid", "page_id", "page_scoped_user_id",
        "ctwa_clid", "ig_account_id", "ig_sid",
    }
)

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
# Year first only: 02/03/1990 is 3 February in the US and 2 March in Europe, and a guess would
# hash a date that never matches.
_BIRTHDATE_FORMS = (
    re.compile(r"(?P<y>[0-9]{4})(?P<m>[0-9]{2})(?P<d>[0-9]{2})"),
    re.compile(r"(?P<y>[0-9]{4})(?P<sep>[-/.])(?P<m>[0-9]{1,2})(?P=sep)(?P<d>[0-9]{1,2})"),
)
EARLIEST_BIRTH_YEAR = 1900
BIRTHDATE_EXPECTED = "must be a date as YYYY-MM-DD or YYYYMMDD, year 1900 to this year"
COUNTRY_EXPECTED = "must be an ISO 3166-1 country code such as 'us', or a country name"
EMAIL_EXPECTED = "must be an email address such as name@example.com"
PHONE_EXPECTED = ("must be a phone number with its country code such as +1 650 555 1212 "
                  "(or set default_phone_region for the API key or pixel)")
GENDER_EXPECTED = "must be f or m, or a word for female or male such as 'female' or 'mujer'"
DAY_EXPECTED = "must be a day of the month, 01 to 31"
MONTH_EXPECTED = "must be a month, 01 to 12"
YEAR_EXPECTED = "must be a year as YYYY, 1900 to this year"


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


# Invisible characters that are never part of a name: zero-width space, byte order mark, soft
# hyphen. Joiners (ZWJ, ZWNJ) stay: Persian and Indic spellings need them.
_INVISIBLE = frozenset("\u200b\ufeff\u00ad")


def _is_junk(char: str) -> bool:
    return char in _INVISIBLE or unicodedata.category(char) == "Cc"


def _is_punctuation(char: str) -> bool:
    """Unicode P*, and modifier symbols (an acute or grave accent typed for an apostrophe)."""
    category = unicodedata.category(char)
    return category[0] == "P" or category == "Sk"


def _is_special(char: str) -> bool:
    """Punctuation or any symbol (``&``, ``+``, ``©``): Meta's "special characters"."""
    return unicodedata.category(char)[0] in "PS"


def _clean(value: str) -> str:
    """NFC, lowercase, trimmed: the start of every text key's normalization."""
    return unicodedata.normalize("NFC", value).lower().strip()


def _letters_only(value: str) -> str:
    """Lowercase without punctuation, special characters or spaces; letters keep their marks.

    How codes and names are looked up (country, st, ge): ``Côte d'Ivoire`` -> ``côtedivoire``.
    """
    return "".join(c for c in _clean(value)
                   if not (c.isspace() or _is_special(c) or _is_junk(c)))


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
    """Trimmed and lowercase (Meta), once ``email-validator`` finds it a syntactically valid
    address (no DNS lookup: the collector must answer without the network)."""
    import email_validator  # on first use: processes that never hash skip its import

    text = _clean(value)
    if not text:
        return ""
    try:
        email_validator.validate_email(text, check_deliverability=False)
    except email_validator.EmailNotValidError:
        raise UnnormalizableValue("em", EMAIL_EXPECTED) from None
    return text


def normalize_phone(value: str, region: str | None = None) -> str:
    """E.164 digits (country code, no ``+``, no leading zeros): ``+1 (650)555-1212`` ->
    ``16505551212``.

    Parsed by ``phonenumbers``: letters (``1-800-FLOWERS``) become digits, an extension is cut
    off. A number written without its country code is read in ``region`` (a default from the
    API key, the pixel or the event's country); one that is still not a valid number there or
    with a country code raises ``UnnormalizableValue``.
    """
    text = value.strip()
    if not any(c.isalnum() for c in text):
        return ""
    import phonenumbers  # first use only, as above

    number = _parse_phone(text, region.upper() if region else None)
    if number is None:
        raise UnnormalizableValue("ph", PHONE_EXPECTED)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def _parse_phone(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    """The first valid reading of ``text``: in ``region``, then as country code + number.

    A number that is only *possible* (right length, unknown range) is taken only when the
    sender wrote the country code (``+`` or ``00``): the library's ranges can lag a country's
    new ones, but a guess at the country would hash a number that never matches.
    """
    import phonenumbers

    international = text.startswith(("+", "00"))
    readings: list[tuple[str, str | None]] = []
    if region and not text.startswith("+"):
        readings.append((text, region))
    readings.append(("+" + text.lstrip("+0 "), None))
    possible = None
    for candidate, in_region in readings:
        try:
            number = phonenumbers.parse(candidate, in_region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return number
        if possible is None and international and phonenumbers.is_possible_number(number):
            possible = number
    return possible


def normalize_name(value: str) -> str:
    """Lowercase, UTF-8, no punctuation (fn, ln): ``Mary-Jane`` -> ``maryjane``.

    Only punctuation goes (Unicode P*, and modifier symbols such as an acute accent typed for
    an apostrophe); letters keep their combining marks (``प्रिया``, ``ராஜா``, ``José``). Spaces inside
    stay, one between words, as the SDK keeps them: ``van der Berg`` -> ``van der berg``.
    """
    kept = "".join(c for c in _clean(value) if not (_is_punctuation(c) or _is_junk(c)))
    return " ".join(kept.split())


def normalize_city(value: str) -> str:
    """Lowercase, no punctuation, special characters, digits or spaces: ``New York 10001`` ->
    ``newyork``, ``São Paulo`` -> ``sãopaulo``, ``नई दिल्ली`` -> ``नईदिल्ली``."""
    return "".join(c for c in _letters_only(value) if unicodedata.category(c)[0] != "N")


def normalize_state(value: str) -> str:
    """2-letter code, lowercase; a US state's name becomes its code: ``New York`` -> ``ny``.

    Other regions keep the name, lowercase without punctuation, special characters, digits or
    spaces, as Meta asks for states outside the US.
    """
    letters = normalize_city(value)
    if len(letters) <= 2:
        return letters  # a code already: the subdivision table is not needed
    return _us_state_codes().get(_without_accents(letters), letters)


def normalize_gender(value: str) -> str:
    """``f`` or ``m`` from a word in ``relay.gender_words``; ``""`` for a word for neither."""
    key = _letters_only(value)
    if not key:
        return ""
    for candidate in (key, _without_accents(key)):
        gender = _gender_words().get(candidate)
        if gender is not None:
            return gender
    raise UnnormalizableValue("ge", GENDER_EXPECTED)


@functools.cache
def _gender_words() -> dict[str, str]:
    table = {_letters_only(w): "" for w in gender_words.NEITHER_WORDS}
    table.update({_letters_only(w): "f" for w in gender_words.FEMALE_WORDS})
    table.update({_letters_only(w): "m" for w in gender_words.MALE_WORDS})
    return table


# A whole UK postcode: outward code (area + district), space, inward code (sector + unit).
_UK_POSTCODE = re.compile(r"(?P<sector>[a-z]{1,2}[0-9][a-z0-9]?[0-9])[a-z]{2}")
_US_ZIP = re.compile(r"(?P<zip5>[0-9]{5})-?[0-9]{4}")


def normalize_zip(value: str, country: str | None = None) -> str:
    """Lowercase, no spaces (any Unicode space) and no dash; US: the first 5 digits; UK: area,
    district and sector (``SW1A 1AA`` -> ``sw1a1``), as Meta asks.

    ``country`` (the event's, lowercase alpha-2) decides which of the two applies; without it,
    a ZIP+4 (``94025-1234``) is taken as American and a whole UK postcode as British, shapes no
    other country's codes have.
    """
    text = "".join(c for c in _clean(value) if not (c.isspace() or _is_junk(c)))
    if country in (None, "us") and (us := _US_ZIP.fullmatch(text)):
        return us["zip5"]
    if country in (None, "gb") and (uk := _UK_POSTCODE.fullmatch(text)):
        return uk["sector"]
    return text.replace("-", "")


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


def normalize_name_prefix(value: str, length: int) -> str:
    """The first ``length`` characters of the normalized name (f5first, f5last: 5; fi: 1), as
    the SDK cuts them, after ``normalize_name``: ``Mary-Jane`` -> ``maryj``."""
    return normalize_name(value)[:length].rstrip()


def normalize_birth_part(key: str, value: str) -> str:
    """``dobd`` and ``dobm`` as two digits (``7`` -> ``07``), ``doby`` as four, from 1900 to
    this year, like ``db``."""
    text = value.strip()
    if not text:
        return ""
    if key == "doby":
        if not (len(text) == 4 and text.isascii() and text.isdigit()
                and EARLIEST_BIRTH_YEAR <= int(text) <= date.today().year):
            raise UnnormalizableValue(key, YEAR_EXPECTED)
        return text
    highest, expected = (31, DAY_EXPECTED) if key == "dobd" else (12, MONTH_EXPECTED)
    if not (len(text) <= 2 and text.isascii() and text.isdigit()
            and 1 <= int(text) <= highest):
        raise UnnormalizableValue(key, expected)
    return text.zfill(2)


def normalize_external_id(value: str) -> str:
    return value.strip().lower()


@dataclass(frozen=True, slots=True)
class Context:
    """What a key's normalization may need from the rest of the event."""

    country: str | None = None  # lowercase alpha-2: ZIP rules, the phone's region
    phone_region: str | None = None  # configured default for numbers without a country code

    @property
    def region(self) -> str | None:
        return self.country or self.phone_region


NO_CONTEXT = Context()

NORMALIZERS: dict[str, Callable[[str, Context], str]] = {
    "em": lambda v, _: normalize_email(v),
    "ph": lambda v, c: normalize_phone(v, c.region),
    "fn": lambda v, _: normalize_name(v),
    "ln": lambda v, _: normalize_name(v),
    "db": lambda v, _: normalize_birthdate(v),
    "ge": lambda v, _: normalize_gender(v),
    "ct": lambda v, _: normalize_city(v),
    "st": lambda v, _: normalize_state(v),
    "zp": lambda v, c: normalize_zip(v, c.country),
    "country": lambda v, _: normalize_country(v),
    "external_id": lambda v, _: normalize_external_id(v),
    "f5first": lambda v, _: normalize_name_prefix(v, 5),
    "f5last": lambda v, _: normalize_name_prefix(v, 5),
    "fi": lambda v, _: normalize_name_prefix(v, 1),
    "dobd": lambda v, _: normalize_birth_part("dobd", v),
    "dobm": lambda v, _: normalize_birth_part("dobm", v),
    "doby": lambda v, _: normalize_birth_part("doby", v),
}


def context_for(country: str | list[str] | None, phone_region: str | None = None) -> Context:
    """The event's country (its first raw value that names one) and the configured region."""
    values = country if isinstance(country, list) else [country] if country else []
    for value in values:
        if is_sha256_hex(value.strip()):
            continue
        try:
            code = normalize_country(value)
        except UnnormalizableValue:
            continue  # refused with its own sentence when the country key itself is hashed
        if code:
            return Context(country=code, phone_region=phone_region)
    return Context(phone_region=phone_region)


def hash_value(key: str, value: str, context: Context = NO_CONTEXT) -> str | None:
    """Hash one value of a hashed key; ``None`` when nothing is left after normalizing.

    Raises ``UnnormalizableValue`` when the value has no form Meta documents.
    """
    if is_sha256_hex(value.strip()):
        return value.strip().lower()
    normalized = NORMALIZERS[key](value, context)
    if not normalized:
        return None
    return sha256_hex(normalized)


def hash_user_field(key: str, value: str | list[str],
                    context: Context = NO_CONTEXT) -> str | list[str] | None:
    """Hash a single value or a list of values of one ``user_data`` key.

    One value that cannot be normalized rejects the whole field (``UnnormalizableValue``).
    """
    if isinstance(value, list):
        hashed = [h for v in value if (h := hash_value(key, v, context)) is not None]
        return hashed or None
    return hash_value(key, value, context)
