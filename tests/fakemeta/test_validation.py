"""Each of Meta's body rules (docs/fake-meta.md, Validation rules), checked on the pure
validation functions."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from fakemeta._errors import MetaError
from fakemeta._validation import (
    ACTION_SOURCES,
    MAX_EVENTS,
    parse_json_body,
    validate_payload,
)
from tests.fakemeta.conftest import (
    APP_DATA,
    NOW,
    check,
    make_event,
    rejection,
    sha256,
    with_user_data,
)

DAY = 24 * 3600


# --- whole request ---


def test_valid_website_event_is_accepted() -> None:
    event = make_event()

    batch = check(event)

    assert [event] == batch.events


def test_test_event_code_and_partner_agent_are_returned() -> None:
    batch = check(make_event(), test_event_code="TEST123", partner_agent="pixelrelay-0.1.0")

    assert ("TEST123", "pixelrelay-0.1.0") == (batch.test_event_code, batch.partner_agent)


def test_test_event_code_must_be_a_string() -> None:
    assert 100 == rejection(make_event(), test_event_code=123).code


def test_data_as_json_string_is_decoded_like_a_form_field() -> None:
    event = make_event()

    batch = validate_payload({"data": msgspec.json.encode([event]).decode()}, now=NOW)

    assert [event] == batch.events


def test_data_string_that_is_not_json_is_rejected() -> None:
    with pytest.raises(MetaError) as caught:
        validate_payload({"data": "[{not json"}, now=NOW)
    assert 100 == caught.value.code


def test_missing_data_is_rejected() -> None:
    with pytest.raises(MetaError) as caught:
        validate_payload({}, now=NOW)
    assert (100, "The parameter data is required.") == (caught.value.code, caught.value.user_msg)


def test_data_that_is_not_a_list_is_rejected() -> None:
    with pytest.raises(MetaError) as caught:
        validate_payload({"data": {"event_name": "Purchase"}}, now=NOW)
    assert 100 == caught.value.code


def test_empty_batch_is_rejected() -> None:
    assert 100 == rejection().code


def test_batch_of_1000_events_is_accepted() -> None:
    assert MAX_EVENTS == len(check(*[make_event()] * MAX_EVENTS).events)


def test_batch_of_1001_events_is_rejected() -> None:
    error = rejection(*[make_event()] * (MAX_EVENTS + 1))

    assert 100 == error.code
    assert "1001" in (error.user_msg or "")


def test_one_bad_event_rejects_the_batch_and_names_its_index_and_field() -> None:
    bad = with_user_data(em="jane@example.com", client_user_agent="UA")
    events = [make_event(), make_event(), make_event(), bad]

    error = rejection(*events)

    assert (100, "Invalid parameter") == (error.code, error.message)
    assert (error.user_msg or "").startswith("data[3].user_data.em ")


def test_error_message_never_echoes_the_offending_value() -> None:
    error = rejection(with_user_data(em="jane@example.com", client_user_agent="UA"))

    assert "jane" not in str(error.body("trace"))


def test_event_that_is_not_an_object_is_rejected() -> None:
    assert "data[0]" in (rejection("Purchase").user_msg or "")


# --- event fields ---


def test_event_name_is_required() -> None:
    event = make_event()
    del event["event_name"]

    assert "data[0].event_name" in (rejection(event).user_msg or "")


def test_event_name_must_be_a_string() -> None:
    assert 100 == rejection(make_event(event_name=7)).code


def test_event_time_is_required() -> None:
    event = make_event()
    del event["event_time"]

    assert "data[0].event_time" in (rejection(event).user_msg or "")


def test_event_time_in_milliseconds_is_rejected() -> None:
    error = rejection(make_event(event_time=NOW * 1000))

    assert 100 == error.code
    assert "milliseconds" in (error.user_msg or "")


@pytest.mark.parametrize("event_time", [float(NOW), str(NOW), True, 0, -5])
def test_event_time_must_be_positive_whole_seconds(event_time: Any) -> None:
    assert 100 == rejection(make_event(event_time=event_time)).code


def test_event_older_than_7_days_is_rejected_with_subcode_2804003() -> None:
    error = rejection(make_event(event_time=NOW - 7 * DAY - 1))

    assert (100, 2804003) == (error.code, error.subcode)


def test_event_just_inside_7_days_is_accepted() -> None:
    assert check(make_event(event_time=NOW - 7 * DAY + 60))


def test_event_more_than_10_minutes_in_the_future_is_rejected() -> None:
    error = rejection(make_event(event_time=NOW + 11 * 60))

    assert (100, None) == (error.code, error.subcode)


def test_event_a_few_minutes_in_the_future_is_accepted() -> None:
    assert check(make_event(event_time=NOW + 5 * 60))


def test_action_source_is_required() -> None:
    event = make_event()
    del event["action_source"]

    assert "data[0].action_source" in (rejection(event).user_msg or "")


def test_unknown_action_source_is_rejected() -> None:
    assert 100 == rejection(make_event(action_source="web")).code


@pytest.mark.parametrize("action_source", sorted(ACTION_SOURCES))
def test_every_documented_action_source_is_accepted(action_source: str) -> None:
    # App events also need app_data (tests/fakemeta/test_app_request_shapes.py).
    extra = {"app_data": APP_DATA} if action_source == "app" else {}
    assert check(make_event(action_source=action_source, **extra))


def test_event_id_may_be_a_string_or_a_number() -> None:
    assert check(make_event(event_id="order-1"), make_event(event_id=1001))


def test_event_id_of_another_type_is_rejected() -> None:
    assert 100 == rejection(make_event(event_id=["order-1"])).code


def test_website_event_needs_event_source_url() -> None:
    event = make_event()
    del event["event_source_url"]

    assert "data[0].event_source_url" in (rejection(event).user_msg or "")


def test_website_event_needs_client_user_agent() -> None:
    event = with_user_data(em=sha256("jane@example.com"), client_ip_address="203.0.113.7")

    assert "data[0].user_data.client_user_agent" in (rejection(event).user_msg or "")


def test_non_website_event_needs_neither_url_nor_user_agent() -> None:
    event = make_event(action_source="physical_store", user_data={"ph": sha256("16505551212")})
    del event["event_source_url"]

    assert check(event)


# --- custom_data ---


@pytest.mark.parametrize("currency", ["EUR", "usd"])
def test_three_letter_currency_is_accepted(currency: str) -> None:
    assert check(make_event(custom_data={"currency": currency, "value": 1}))


@pytest.mark.parametrize("currency", ["EU", "EURO", "E1R", 978])
def test_currency_that_is_not_three_letters_is_rejected(currency: Any) -> None:
    error = rejection(make_event(custom_data={"currency": currency, "value": 1}))

    assert "data[0].custom_data.currency" in (error.user_msg or "")


@pytest.mark.parametrize("value", [0, 19, 19.99, -5.0])
def test_numeric_value_is_accepted(value: float) -> None:
    assert check(make_event(custom_data={"currency": "EUR", "value": value}))


@pytest.mark.parametrize("value", ["19.99", True, [19.99]])
def test_value_that_is_not_a_number_is_rejected(value: Any) -> None:
    error = rejection(make_event(custom_data={"currency": "EUR", "value": value}))

    assert "data[0].custom_data.value" in (error.user_msg or "")


def test_custom_data_must_be_an_object() -> None:
    assert 100 == rejection(make_event(custom_data=[1, 2])).code


# --- raw bodies ---


def test_json_body_is_decoded_into_parameters() -> None:
    assert {"data": []} == parse_json_body(b'{"data": []}')


def test_empty_body_has_no_parameters() -> None:
    assert {} == parse_json_body(b"  ")


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"data"'])
def test_body_that_is_not_a_json_object_is_rejected(raw: bytes) -> None:
    with pytest.raises(MetaError) as caught:
        parse_json_body(raw)
    assert 100 == caught.value.code
