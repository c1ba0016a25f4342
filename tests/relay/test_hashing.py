"""relay.hashing: every key of Meta's normalization table, then SHA-256."""

from __future__ import annotations

import hashlib
from datetime import date

import pycountry
import pytest

from relay.hashing import (
    BIRTHDATE_EXPECTED,
    CLEAR_KEYS,
    COUNTRY_ALIASES,
    COUNTRY_EXPECTED,
    HASHED_KEYS,
    Context,
    UnnormalizableValue,
    _us_state_codes,
    context_for,
    hash_user_field,
    hash_value,
    is_sha256_hex,
    sha256_hex,
)

THIS_YEAR = date.today().year


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.mark.parametrize(
    ("key", "raw", "normalized"),
    [
        # em: trim, lowercase
        ("em", "  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        # ph: digits only, with country code, no leading zeros
        ("ph", "+1 (650) 555-1212", "16505551212"),
        ("ph", "1 (650)555-1212", "16505551212"),
        ("ph", "0044 20 7946 0958", "442079460958"),
        ("ph", "+49 30/1234-567", "49301234567"),
        # fn, ln: lowercase, no punctuation, UTF-8
        ("fn", "  Mary-Jane ", "maryjane"),
        ("fn", "José", "josé"),
        ("ln", "O'Brien", "obrien"),
        ("ln", "Müller", "müller"),
        # db: YYYYMMDD
        ("db", "1990-01-31", "19900131"),
        ("db", "19900131", "19900131"),
        ("db", "1990/1/5", "19900105"),
        # ge: f or m
        ("ge", "F", "f"),
        ("ge", " Female ", "f"),
        ("ge", "male", "m"),
        # ct: lowercase, no punctuation, digits or spaces
        ("ct", "New York", "newyork"),
        ("ct", "St. Louis", "stlouis"),
        ("ct", "New York 10001", "newyork"),
        ("ct", "São Paulo", "sãopaulo"),
        # st: 2-letter code, lowercase
        ("st", "CA", "ca"),
        ("st", " N.Y. ", "ny"),
        # zp: lowercase, no spaces or dash; US: first 5 digits
        ("zp", "94025", "94025"),
        ("zp", "94025-1234", "94025"),
        ("zp", "94025 1234", "94025"),
        ("zp", "SW1A 1AA", "sw1a1"),  # UK: area, district and sector
        ("zp", "75-001", "75001"),
        # country: ISO 3166-1 alpha-2, lowercase
        ("country", "US", "us"),
        ("country", " Fr ", "fr"),
        # external_id: same form on every channel
        ("external_id", " Customer-42 ", "customer-42"),
    ],
)
def test_value_is_normalized_then_hashed(key: str, raw: str, normalized: str) -> None:
    assert sha(normalized) == hash_value(key, raw)


def refusal(key: str, raw: str | list[str]) -> UnnormalizableValue:
    with pytest.raises(UnnormalizableValue) as caught:
        hash_user_field(key, raw)
    return caught.value


# -- db: year-first dates only --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("1990-2-3", "19900203"),
        ("1990-02-03", "19900203"),
        ("1990/12/31", "19901231"),
        ("1990.2.3", "19900203"),
        (" 19900203 ", "19900203"),
        ("2000-02-29", "20000229"),
        ("1900-01-01", "19000101"),
        (f"{THIS_YEAR}-1-1", f"{THIS_YEAR}0101"),
    ],
)
def test_year_first_birthdate_becomes_yyyymmdd(raw: str, normalized: str) -> None:
    assert sha(normalized) == hash_value("db", raw)


@pytest.mark.parametrize(
    "raw",
    [
        "02/03/1990",  # month or day first: 3 February or 2 March
        "3.2.1990",
        "03-02-90",
        "199023",  # the compact form needs two digits for month and day
        "1990023",
        "1990-0203",  # one separator, not two
        "1990/02-03",
        "1990-02",
        "1990-02-03-04",
        "1990-13-01",
        "1990-02-30",
        "1999-02-29",
        "1899-12-31",
        f"{THIS_YEAR + 1}-01-01",
        "1990-02-03T10:00:00",
        "Feb 3, 1990",
        "n/a",
        "\u0661\u0669\u0669\u0660-\u0660\u0662-\u0660\u0663",  # Arabic-Indic digits
    ],
)
def test_birthdate_that_is_not_a_year_first_date_is_refused(raw: str) -> None:
    error = refusal("db", raw)

    assert ("db", BIRTHDATE_EXPECTED) == (error.key, error.expected)


# -- st: 2-letter code; US state names become their code ------------------------------------------
@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("California", "ca"),
        ("new york", "ny"),
        (" NEW  YORK ", "ny"),
        ("District of Columbia", "dc"),
        ("Puerto Rico", "pr"),
        ("Virgin Islands, U.S.", "vi"),
        # outside the US: lowercase, no punctuation, no spaces
        ("Ontario", "ontario"),
        ("Île-de-France", "îledefrance"),
        ("Baden-Württemberg", "badenwürttemberg"),
    ],
)
def test_state_name_becomes_its_code_in_the_us_or_stays_a_name_elsewhere(
        raw: str, normalized: str) -> None:
    assert sha(normalized) == hash_value("st", raw)


def test_two_letter_state_does_not_load_the_subdivision_table() -> None:
    _us_state_codes.cache_clear()

    hash_value("st", "NY")

    assert 0 == _us_state_codes.cache_info().misses


# -- country: ISO 3166-1 alpha-2 from a code or a name --------------------------------------------
@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("de", "de"),
        ("U.S.", "us"),
        ("USA", "us"),
        ("deu", "de"),
        ("U.S.A.", "us"),
        ("United States", "us"),
        ("united states of america", "us"),
        ("unitedstates", "us"),
        ("Germany", "de"),
        ("South Korea", "kr"),
        ("Côte d'Ivoire", "ci"),
        ("Cote d'Ivoire", "ci"),
        ("UK", "gb"),  # not ISO, but what shops send: COUNTRY_ALIASES
        ("England", "gb"),
        ("Russia", "ru"),
        ("The Netherlands", "nl"),
        ("Österreich", "at"),
        ("España", "es"),
    ],
)
def test_country_code_or_name_becomes_alpha_2(raw: str, normalized: str) -> None:
    assert sha(normalized) == hash_value("country", raw)


@pytest.mark.parametrize(
    "raw",
    [
        "xx",  # 2 letters, but no country's code
        "UU",
        "x",
        "Atlantis",
        "Untied States",
        "840",  # numeric codes are not taken
    ],
)
def test_unknown_country_is_refused(raw: str) -> None:
    error = refusal("country", raw)

    assert ("country", COUNTRY_EXPECTED) == (error.key, error.expected)


@pytest.mark.parametrize(("key", "raw"), [("db", "31/12/1990"), ("country", "Atlantis")])
def test_refusal_never_repeats_the_value(key: str, raw: str) -> None:
    error = refusal(key, raw)

    assert raw not in f"{error} {error.expected}"


def test_every_country_alias_names_a_real_country() -> None:
    assert set(COUNTRY_ALIASES.values()) <= {c.alpha_2.lower() for c in pycountry.countries}


def test_one_bad_value_in_a_list_refuses_the_field() -> None:
    assert "country" == refusal("country", ["us", "Atlantis"]).key


def test_phone_example_from_the_brief_hashes_digits_with_country_code() -> None:
    assert sha("16505551212") == hash_value("ph", "+1 (650) 555-1212")


def test_hash_is_lowercase_hex_sha256() -> None:
    digest = sha256_hex("jane.doe@example.com")

    assert (64, digest.lower()) == (len(digest), digest)
    assert hashlib.sha256(b"jane.doe@example.com").hexdigest() == digest


@pytest.mark.parametrize("key", sorted(HASHED_KEYS))
def test_already_hashed_value_passes_through_lowercased(key: str) -> None:
    digest = sha("someone@example.com")

    assert digest == hash_value(key, digest.upper())


def test_already_hashed_value_with_surrounding_whitespace_is_not_hashed_again() -> None:
    digest = sha("someone@example.com")

    assert digest == hash_value("em", f"  {digest}\n")


@pytest.mark.parametrize(
    ("key", "raw"),
    [("em", "   "), ("ph", "(-) "), ("fn", "!!!"), ("ct", "123"), ("ge", "x"),
     ("ge", "unknown"), ("country", "."), ("zp", " - "), ("external_id", "  "),
     ("db", "  "), ("db", "--"), ("st", ". ")],
)
def test_value_empty_after_normalization_is_dropped(key: str, raw: str) -> None:
    assert None is hash_value(key, raw)


def test_list_values_are_hashed_one_by_one() -> None:
    assert [sha("a@example.com"), sha("b@example.com")] == hash_user_field(
        "em", ["A@example.com ", " b@EXAMPLE.com"]
    )


def test_list_drops_values_empty_after_normalization() -> None:
    assert [sha("16505551212")] == hash_user_field("ph", ["", "+1 650 555 1212", "--"])


def test_list_with_nothing_left_becomes_none() -> None:
    assert None is hash_user_field("fn", [" ", "..."])


def test_single_value_field_is_hashed() -> None:
    assert sha("jane") == hash_user_field("fn", "Jane")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a" * 64, True), ("A" * 64, True), ("a" * 63, False), ("a" * 65, False),
     ("g" * 64, False), ("a" * 64 + "\n", False), ("", False)],
)
def test_is_sha256_hex(value: str, expected: bool) -> None:
    assert expected == is_sha256_hex(value)


def test_clear_keys_are_never_hashed_keys() -> None:
    assert set() == HASHED_KEYS & CLEAR_KEYS


@pytest.mark.parametrize(
    "key",
    ["client_ip_address", "client_user_agent", "fbc", "fbp", "subscription_id",
     "fb_login_id", "lead_id"],
)
def test_brief_never_hash_keys_are_clear_keys(key: str) -> None:
    assert key in CLEAR_KEYS


# -- issue 11: the defects a new user found -------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "raw", "normalized"),
    [
        ("fn", "प्रिया", "प्रिया"),  # Devanagari vowel signs are marks, not punctuation
        ("fn", "ராஜா", "ராஜா"),
        ("ln", "ใจดี", "ใจดี"),
        ("ge", "mujer", "f"), ("ge", "mulher", "f"), ("ge", "Mrs", "f"), ("ge", "Ms", "f"),
        ("ge", "Madame", "f"), ("ge", "woman", "f"), ("ge", "weiblich", "f"),
        ("ge", "Mr.", "m"), ("ge", "hombre", "m"),
        ("ph", "+1-800-FLOWERS", "18003569377"),
        ("ph", "+1 650 555 1212 ext. 34", "16505551212"),
        ("zp", "75\u00a0001", "75001"),
        ("zp", "10\u202f115", "10115"),
    ],
)
def test_values_the_issue_found_mangled_are_normalized(key: str, raw: str,
                                                       normalized: str) -> None:
    assert sha(normalized) == hash_value(key, raw)


@pytest.mark.parametrize(("key", "raw"), [("em", "john.example.com"), ("em", "n/a"),
                                          ("em", "john@"), ("ph", "(650) 555-1212"),
                                          ("ge", "dog"), ("ge", "2")])
def test_values_that_are_not_what_the_key_holds_are_refused(key: str, raw: str) -> None:
    error = refusal(key, raw)

    assert (key, False) == (error.key, raw in str(error))


def test_a_phone_without_country_code_is_read_in_the_region() -> None:
    assert sha("5511987654321") == hash_value("ph", "(11) 98765-4321",
                                              Context(phone_region="BR"))


def test_the_events_country_reads_the_phone_before_the_default_region() -> None:
    context = context_for("France", phone_region="BR")

    assert sha("33612345678") == hash_value("ph", "06 12 34 56 78", context)


def test_a_hashed_country_gives_no_context() -> None:
    assert Context(phone_region="BR") == context_for(sha("fr"), phone_region="BR")


def test_outside_the_us_a_zip_plus_four_shape_keeps_every_digit() -> None:
    assert sha("123456789") == hash_value("zp", "12345-6789", Context(country="de"))


def test_outside_the_uk_a_uk_shaped_postcode_is_kept_whole() -> None:
    assert sha("ab12cd") == hash_value("zp", "AB1 2CD", Context(country="nl"))


def test_words_for_neither_gender_drop_the_key() -> None:
    assert [None, None, None] == [hash_value("ge", w) for w in ("divers", "Non-binary", "X")]
