"""relay.hashing: every key of Meta's normalization table, then SHA-256."""

from __future__ import annotations

import hashlib

import pytest

from relay.hashing import (
    CLEAR_KEYS,
    HASHED_KEYS,
    hash_user_field,
    hash_value,
    is_sha256_hex,
    sha256_hex,
)


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
        ("zp", "SW1A 1AA", "sw1a1aa"),
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
     ("ge", "unknown"), ("country", "."), ("zp", " - "), ("external_id", "  ")],
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
