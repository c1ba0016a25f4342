"""Meta's user_data rules (docs/fake-meta.md, Validation rules): hashing, fbc/fbp, enough keys
to match."""

from __future__ import annotations

from typing import Any

import pytest

from fakemeta._validation import (
    HASHED_KEYS,
)
from tests.fakemeta.conftest import check, make_event, rejection, sha256, with_user_data


def test_user_data_is_required() -> None:
    event = make_event()
    del event["user_data"]

    assert "data[0].user_data" in (rejection(event).user_msg or "")


def test_user_data_must_be_an_object() -> None:
    assert 100 == rejection(make_event(user_data=["em"])).code


def test_empty_user_data_is_rejected() -> None:
    event = make_event(action_source="email", user_data={})

    assert 100 == rejection(event).code


@pytest.mark.parametrize("key", HASHED_KEYS)
def test_unhashed_value_of_a_hashed_key_is_rejected_with_subcode_2804019(key: str) -> None:
    error = rejection(with_user_data(**{key: "plain", "client_user_agent": "UA", "fbp": FBP}))

    assert (100, 2804019) == (error.code, error.subcode)
    assert f"data[0].user_data.{key}" in (error.user_msg or "")


@pytest.mark.parametrize("key", HASHED_KEYS)
def test_hashed_value_of_a_hashed_key_is_accepted(key: str) -> None:
    assert check(with_user_data(**{key: sha256("x"), "client_user_agent": "UA", "fbp": FBP}))


def test_uppercase_hex_hash_is_rejected() -> None:
    error = rejection(with_user_data(em=sha256("x").upper(), client_user_agent="UA"))

    assert 2804019 == error.subcode


def test_list_of_hashes_is_accepted() -> None:
    assert check(with_user_data(em=[sha256("a"), sha256("b")], client_user_agent="UA"))


def test_list_with_one_unhashed_value_is_rejected() -> None:
    error = rejection(with_user_data(em=[sha256("a"), "b@example.com"], client_user_agent="UA"))

    assert 2804019 == error.subcode


def test_unhashed_external_id_is_accepted() -> None:
    assert check(with_user_data(external_id="customer-42", client_user_agent="UA"))


def test_hashed_external_id_is_accepted() -> None:
    assert check(with_user_data(external_id=[sha256("customer-42")], client_user_agent="UA"))


def test_external_id_that_is_not_a_string_is_rejected() -> None:
    error = rejection(with_user_data(external_id=42, client_user_agent="UA"))

    assert 2804019 == error.subcode


FBP = "fb.1.1700000000000.1234567890"


@pytest.mark.parametrize(
    "fbc",
    [
        "fb.1.1700000000000.IwAR2xYz.with.dots",
        "fb.2.1700000000000.AbC-_dEf",
        "fb.1.1700000000000.IwZXh0bgNhZW0BMABhZGlkAAAB.AQ",
    ],
)
def test_well_formed_fbc_is_accepted(fbc: str) -> None:
    assert check(with_user_data(fbc=fbc, client_user_agent="UA"))


@pytest.mark.parametrize(
    "fbc",
    [
        "fb.1.1700000000000.",  # empty fbclid
        "fb.1.1700000000.IwAR",  # creation time in seconds, not ms
        "fb.x.1700000000000.IwAR",
        "fb.1.17000000000O0.IwAR",
        "IwAR2xYz",  # a bare fbclid
        "fb.1.1700000000000",
        1700000000000,
    ],
)
def test_malformed_fbc_is_rejected_with_subcode_2804001(fbc: Any) -> None:
    error = rejection(with_user_data(fbc=fbc, client_user_agent="UA", fbp=FBP))

    assert (100, 2804001) == (error.code, error.subcode)
    assert "data[0].user_data.fbc" in (error.user_msg or "")


def test_well_formed_fbp_is_accepted() -> None:
    assert check(with_user_data(fbp=FBP, client_user_agent="UA"))


@pytest.mark.parametrize("fbp", ["fb.1.1700000000000.abc", "fb.1.1700000000000", "1234567890"])
def test_malformed_fbp_is_rejected(fbp: str) -> None:
    error = rejection(with_user_data(fbp=fbp, client_user_agent="UA", em=sha256("x")))

    assert 100 == error.code
    assert "data[0].user_data.fbp" in (error.user_msg or "")


@pytest.mark.parametrize(
    "keys",
    [
        {"client_user_agent"},
        {"ct", "country", "st", "zp", "ge", "client_user_agent"},
        {"country", "zp", "client_user_agent"},
        {"db", "client_user_agent"},
        {"fn", "ge"},
        {"ln", "ge"},
        {"fn"},
    ],
    ids=sorted,
)
def test_too_little_user_data_is_rejected_with_subcode_2804050(keys: set[str]) -> None:
    user_data = {key: "UA" if key == "client_user_agent" else sha256(key) for key in keys}
    event = make_event(action_source="system_generated", user_data=user_data)

    error = rejection(event)

    assert (100, 2804050) == (error.code, error.subcode)


@pytest.mark.parametrize(
    "keys",
    [
        {"client_ip_address", "client_user_agent"},
        {"fn", "ln", "ge"},
        {"db", "ct", "client_user_agent"},
        {"fbp", "client_user_agent"},
        {"em"},
    ],
    ids=sorted,
)
def test_enough_user_data_is_accepted(keys: set[str]) -> None:
    values = {"client_ip_address": "203.0.113.7", "client_user_agent": "UA", "fbp": FBP}
    user_data = {key: values.get(key, sha256(key)) for key in keys}

    assert check(make_event(action_source="system_generated", user_data=user_data))


def test_empty_values_do_not_count_as_user_data() -> None:
    event = with_user_data(em=[], ph=None, external_id="", client_user_agent="UA")

    assert 2804050 == rejection(event).subcode
