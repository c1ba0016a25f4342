"""relay.validation: the rules Meta would reject an event for, checked before sending."""

from __future__ import annotations

import msgspec
import pytest

from relay.events import MetaEvent, UserData
from relay.validation import EXPIRY_MARGIN_S, door_problem, is_expired, present_keys, problem
from tests.relay.factories import FBC, FBP, USER_AGENT, meta_event, sha

NOW_S = 1_790_000_000
DAY_S = 86_400


def event(*, user: UserData | None = None, **fields: object) -> MetaEvent:
    base = meta_event("e1", event_time=NOW_S - 60)
    if user is not None:
        base = msgspec.structs.replace(base, user_data=user)
    return msgspec.structs.replace(base, **fields)


def test_valid_event_has_no_problem() -> None:
    assert None is problem(event(), NOW_S)


# -- time -----------------------------------------------------------------------------------------
def test_event_older_than_max_age_minus_margin_is_expired() -> None:
    old = event(event_time=NOW_S - 7 * DAY_S + EXPIRY_MARGIN_S - 1)

    assert "expired: event_time is (almost) older than 7 days" == problem(old, NOW_S)


def test_event_just_inside_the_margin_is_not_expired() -> None:
    assert False is is_expired(event(event_time=NOW_S - 7 * DAY_S + EXPIRY_MARGIN_S), NOW_S, 7)


def test_expiry_follows_max_age_days() -> None:
    two_days_old = event(event_time=NOW_S - 2 * DAY_S)

    assert (True, False) == (is_expired(two_days_old, NOW_S, 2),
                             is_expired(two_days_old, NOW_S, 3))


def test_event_more_than_a_day_in_the_future_is_refused() -> None:
    assert "event_time is in the future" == problem(
        event(event_time=NOW_S + DAY_S + 1), NOW_S)


def test_event_less_than_a_day_in_the_future_is_accepted() -> None:
    assert None is problem(event(event_time=NOW_S + DAY_S), NOW_S)


# -- fields ---------------------------------------------------------------------------------------
def test_missing_event_name_is_refused() -> None:
    assert "event_name is missing" == problem(event(event_name=""), NOW_S)


def test_unknown_action_source_is_refused() -> None:
    assert ("action_source must be one of app, business_messaging, chat, email, other, "
            "phone_call, physical_store, system_generated, website") == problem(
        event(action_source="web"), NOW_S)


def test_event_without_user_keys_is_refused() -> None:
    assert ("user_data has no customer information: send a customer key such as em or ph, "
            "or a click_id") == problem(event(user=UserData()), NOW_S)


@pytest.mark.parametrize(
    "user",
    [
        UserData(ct=sha("paris"), country=sha("fr"), st=sha("idf"), zp=sha("75001"),
                 ge=sha("f"), client_user_agent=USER_AGENT),
        UserData(zp=sha("75001"), client_user_agent=USER_AGENT),
        UserData(country=sha("fr")),
        UserData(db=sha("19900131"), client_user_agent=USER_AGENT),
        UserData(db=sha("19900131")),
        UserData(fn=sha("jane"), ge=sha("f")),
        UserData(ln=sha("doe"), ge=sha("f")),
        UserData(fn=sha("jane")),
    ],
    ids=["location-and-ua", "zip-and-ua", "country", "birthdate-and-ua", "birthdate",
         "first-name-and-gender", "last-name-and-gender", "first-name"],
)
def test_too_little_customer_information_is_refused(user: UserData) -> None:
    reason = problem(event(user=user, action_source="email"), NOW_S)

    assert reason is not None and reason.startswith("user_data has too little customer")


@pytest.mark.parametrize(
    "user",
    [
        UserData(fn=sha("jane"), ln=sha("doe")),
        UserData(ct=sha("paris"), client_ip_address="203.0.113.7"),
        UserData(db=sha("19900131"), ge=sha("f")),
        UserData(fbp=FBP),
    ],
    ids=["first-and-last-name", "city-and-ip", "birthdate-and-gender", "fbp"],
)
def test_combinations_beyond_the_too_little_sets_are_enough(user: UserData) -> None:
    assert None is problem(event(user=user, action_source="email"), NOW_S)


def test_website_event_needs_a_url() -> None:
    assert "event_source_url is required for website events" == problem(
        event(event_source_url=None), NOW_S)


def test_website_event_needs_a_user_agent() -> None:
    user = UserData(em=sha("a@example.com"), client_ip_address="203.0.113.7")

    assert "user_data.client_user_agent is required for website events" == problem(
        event(user=user), NOW_S)


def test_non_website_event_needs_neither_url_nor_user_agent() -> None:
    user = UserData(em=sha("a@example.com"))

    assert None is problem(event(user=user, action_source="physical_store",
                                 event_source_url=None), NOW_S)


@pytest.mark.parametrize("key", ["em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country"])
def test_unhashed_value_of_a_hashed_key_is_refused(key: str) -> None:
    user = UserData(**{"em": sha("a@example.com"), "client_user_agent": USER_AGENT,
                       key: "plain"})

    assert f"user_data.{key} is not a SHA-256 hex digest" == problem(event(user=user), NOW_S)


def test_unhashed_value_inside_a_list_is_refused() -> None:
    user = UserData(em=[sha("a@example.com"), "b@example.com"], client_user_agent=USER_AGENT)

    assert "user_data.em is not a SHA-256 hex digest" == problem(event(user=user), NOW_S)


def test_unhashed_external_id_is_allowed() -> None:
    user = UserData(em=sha("a@example.com"), external_id=["customer-42"],
                    client_user_agent=USER_AGENT)

    assert None is problem(event(user=user), NOW_S)


@pytest.mark.parametrize(
    "fbc", ["IwAR2xYzAbC", "fb.1.IwAR2xYzAbC", "fb.x.1700000000000.IwAR", "fb.1.17.IwAR",
            "fb.1.1700000000000.", "fb.1.1700000000000.Iw AR"],
)
def test_malformed_fbc_is_refused(fbc: str) -> None:
    user = UserData(em=sha("a@example.com"), client_user_agent=USER_AGENT, fbc=fbc)

    assert "user_data.fbc is not of the form fb.<index>.<ms>.<fbclid>" == problem(
        event(user=user), NOW_S)


@pytest.mark.parametrize("fbp", ["fb.1.1700000000000", "fb.1.1700000000000.abc", "1234567890"])
def test_malformed_fbp_is_refused(fbp: str) -> None:
    user = UserData(em=sha("a@example.com"), client_user_agent=USER_AGENT, fbp=fbp)

    assert "user_data.fbp is not of the form fb.<index>.<ms>.<random>" == problem(
        event(user=user), NOW_S)


def test_well_formed_fbc_and_fbp_are_accepted() -> None:
    user = UserData(em=sha("a@example.com"), client_user_agent=USER_AGENT, fbc=FBC, fbp=FBP)

    assert None is problem(event(user=user), NOW_S)


def test_present_keys_lists_only_set_keys() -> None:
    user = UserData(em=sha("a@example.com"), fbp=FBP)

    assert frozenset({"em", "fbp"}) == present_keys(user)


# -- one set of rules: the collector's check is the relay's, plus what only the door sees ---------
def test_door_leaves_agent_ip_and_fbp_to_the_click_when_there_is_one() -> None:
    bare = event(user=UserData(fn=sha("jane"), ge=sha("f")))

    assert (None, "user_data has too little customer information to match anyone (fn, ge)") == (
        door_problem(bare, now_s=NOW_S, max_age_days=7, max_future_s=600, has_click=True),
        str(door_problem(bare, now_s=NOW_S, max_age_days=7, max_future_s=600,
                         has_click=False)))


def test_the_relay_no_longer_leaves_anything_to_a_click() -> None:
    bare = event(user=UserData(fn=sha("jane"), ge=sha("f")))

    assert "user_data has too little customer information to match anyone (fn, ge)" == problem(
        bare, NOW_S)


@pytest.mark.parametrize("custom_data", [{"currency": "dollars"}, {"value": "12"}])
def test_custom_data_is_checked_at_the_door_only(custom_data: dict[str, object]) -> None:
    bad = event(custom_data=custom_data)

    assert (True, None) == (
        door_problem(bad, now_s=NOW_S, max_age_days=7, max_future_s=600,
                     has_click=False) is not None, problem(bad, NOW_S))


def test_a_problem_names_where_the_event_was() -> None:
    found = door_problem(event(event_source_url=None), now_s=NOW_S, max_age_days=7,
                         max_future_s=600, has_click=False)

    assert found is not None
    assert "events[2].event_source_url is required for website events" == found.at("events[2]")


@pytest.mark.parametrize(("options", "ok"), [
    ({"data_processing_options": ["LDU"], "data_processing_options_country": 1,
      "data_processing_options_state": 1000}, True),
    ({"data_processing_options": []}, True),
    ({"data_processing_options": ["LDU", "CCPA"]}, False),
    ({"data_processing_options": ["LDU"], "data_processing_options_country": -1}, False),
])
def test_data_processing_options_are_ldu_or_nothing(options: dict[str, object], ok: bool) -> None:
    assert ok == (problem(event(**options), NOW_S) is None)
