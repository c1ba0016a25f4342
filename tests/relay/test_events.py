"""relay.events: checking and hashing inbound events, click enrichment, the dedup key."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from relay.errors import InputError
from relay.events import (
    ClickContext,
    Envelope,
    InboundEvent,
    InboundUserData,
    MetaEvent,
    UserData,
    build_event,
    decode_envelope,
    encode,
    enrich_from_click,
    pack_envelope,
)
from relay.validation import EXPIRY_MARGIN_S
from tests.relay.factories import APP_DATA, EMAIL, FBC, FBP, USER_AGENT, meta_event, sha

NOW_S = 1_790_000_000
DAY_S = 86_400


def inbound(**overrides: object) -> InboundEvent:
    fields: dict[str, object] = {
        "event_name": "Purchase",
        "event_time": NOW_S - 60,
        "event_id": "order-1",
        "action_source": "website",
        "event_source_url": "https://shop.example/thanks",
        "user_data": InboundUserData(em=EMAIL, client_user_agent=USER_AGENT),
    }
    fields.update(overrides)
    return InboundEvent(**fields)  # type: ignore[arg-type]


def build(event: InboundEvent, **kwargs: object) -> MetaEvent:
    options: dict[str, object] = {"now_s": NOW_S, "max_age_days": 7, "max_future_skew_s": 600}
    options.update(kwargs)
    return build_event(event, **options)  # type: ignore[arg-type]


def refusal(event: InboundEvent, **kwargs: object) -> InputError:
    with pytest.raises(InputError) as caught:
        build(event, **kwargs)
    return caught.value


# -- build_event: time ----------------------------------------------------------------------------
def test_event_time_in_seconds_is_kept() -> None:
    assert NOW_S - 60 == build(inbound()).event_time


def test_missing_event_time_becomes_now() -> None:
    assert NOW_S == build(inbound(event_time=None)).event_time


def test_event_time_in_milliseconds_is_refused() -> None:
    error = refusal(inbound(event_time=NOW_S * 1000))

    assert (422, "event.event_time must be Unix seconds, not milliseconds") == (
        error.status, error.message)


def test_event_older_than_max_age_is_refused() -> None:
    error = refusal(inbound(event_time=NOW_S - 7 * DAY_S - 1))

    assert "event.event_time is (almost) older than 7 days" == error.message


def test_event_within_an_hour_of_max_age_is_refused_as_the_relay_would_dead_letter_it() -> None:
    error = refusal(inbound(event_time=NOW_S - 7 * DAY_S + EXPIRY_MARGIN_S - 1))

    assert "event.event_time is (almost) older than 7 days" == error.message


def test_event_just_within_max_age_less_the_margin_is_accepted() -> None:
    at = NOW_S - 7 * DAY_S + EXPIRY_MARGIN_S

    assert at == build(inbound(event_time=at)).event_time


def test_event_beyond_future_skew_is_refused() -> None:
    error = refusal(inbound(event_time=NOW_S + 601))

    assert "event.event_time is in the future" == error.message


def test_event_within_future_skew_is_accepted() -> None:
    assert NOW_S + 600 == build(inbound(event_time=NOW_S + 600)).event_time


def test_error_names_where_the_event_was() -> None:
    error = refusal(inbound(event_time=NOW_S * 1000), where="events[3]")

    assert error.message.startswith("events[3].event_time")


# -- build_event: fields --------------------------------------------------------------------------
def test_unknown_action_source_is_refused() -> None:
    error = refusal(inbound(action_source="billboard"))

    assert error.message.startswith("event.action_source must be one of")


@pytest.mark.parametrize("source", ["email", "app", "phone_call", "chat", "physical_store",
                                    "system_generated", "business_messaging", "other"])
def test_non_website_sources_need_no_url(source: str) -> None:
    app_data = {"app_data": APP_DATA} if source == "app" else {}  # app events need it
    assert source == build(inbound(action_source=source, event_source_url=None,
                                   **app_data)).action_source


def test_website_event_without_url_is_refused() -> None:
    error = refusal(inbound(event_source_url=None))

    assert "event.event_source_url is required for website events" == error.message


def test_event_without_user_data_or_click_id_is_refused() -> None:
    error = refusal(inbound(user_data=None))

    assert ("event.user_data has no customer information: send a customer key such as em or "
            "ph, or a click_id") == error.message


def test_user_data_empty_after_normalization_counts_as_none() -> None:
    error = refusal(inbound(user_data=InboundUserData(em="  ", fn="...")))

    assert error.message.startswith("event.user_data has no customer information")


def test_click_id_alone_is_enough_user_data() -> None:
    assert UserData() == build(inbound(user_data=None, click_id="c-1")).user_data


@pytest.mark.parametrize(("name", "message"), [
    ("", "event.event_name is missing"),
    ("   ", "event.event_name is missing"),
    ("x" * 101, "event.event_name is longer than 100 characters"),
])
def test_event_name_must_be_1_to_100_characters(name: str, message: str) -> None:
    assert message == refusal(inbound(event_name=name)).message


def test_event_name_with_a_colon_is_refused() -> None:
    # pixel:event_name:event_id is the dedup key: "A:B" + "C" would be "A" + "B:C".
    assert "event.event_name must not contain ':'" == refusal(
        inbound(event_name="Lead:B2B")).message


def test_event_name_is_trimmed() -> None:
    assert "Purchase" == build(inbound(event_name=" Purchase ")).event_name


@pytest.mark.parametrize("currency", ["EU", "EURO", "12$", 978])
def test_currency_must_be_three_letters(currency: object) -> None:
    error = refusal(inbound(custom_data={"currency": currency, "value": 1}))

    assert "event.custom_data.currency must be a 3-letter ISO 4217 code" == error.message


@pytest.mark.parametrize("value", ["12.5", True, [1]])
def test_value_must_be_a_number(value: object) -> None:
    error = refusal(inbound(custom_data={"currency": "EUR", "value": value}))

    assert "event.custom_data.value must be a number" == error.message


@pytest.mark.parametrize("value", [0, 12, 12.5])
def test_numeric_value_is_kept(value: float) -> None:
    built = build(inbound(custom_data={"currency": "EUR", "value": value}))

    assert {"currency": "EUR", "value": value} == built.custom_data


def test_event_id_is_kept() -> None:
    assert "order-1" == build(inbound()).event_id


def test_event_id_is_generated_when_absent() -> None:
    first = build(inbound(event_id=None)).event_id
    second = build(inbound(event_id=None)).event_id

    assert (True, True) == (len(first) > 16, first != second)


def test_event_id_longer_than_200_characters_is_refused() -> None:
    assert "event.event_id is longer than 200 characters" == refusal(
        inbound(event_id="x" * 201)).message


# -- build_event: personal data -------------------------------------------------------------------
def test_hashed_keys_are_normalized_and_hashed() -> None:
    raw = InboundUserData(em=" Jane.Doe@Example.com", ph="+1 (650) 555-1212", fn="Jane",
                          ct="New York", external_id=["A-1", "b-2"], client_user_agent=USER_AGENT)

    user = build(inbound(user_data=raw)).user_data

    assert UserData(em=sha(EMAIL), ph=sha("16505551212"), fn=sha("jane"), ct=sha("newyork"),
                    external_id=[sha("a-1"), sha("b-2")], client_user_agent=USER_AGENT) == user


def test_birthdate_state_and_country_take_the_form_meta_documents() -> None:
    raw = InboundUserData(em=EMAIL, db="1990-2-3", st="California", country="United States",
                          client_user_agent=USER_AGENT)

    user = build(inbound(user_data=raw)).user_data

    assert UserData(em=sha(EMAIL), db=sha("19900203"), st=sha("ca"), country=sha("us"),
                    client_user_agent=USER_AGENT) == user


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (InboundUserData(em=EMAIL, db="02/03/1990"),
         "event.user_data.db must be a date as YYYY-MM-DD or YYYYMMDD, year 1900 to this year"),
        (InboundUserData(em=EMAIL, country="Atlantis"),
         "event.user_data.country must be an ISO 3166-1 country code such as 'us', "
         "or a country name"),
        (InboundUserData(em=EMAIL, country=["us", "Atlantis"]),
         "event.user_data.country must be an ISO 3166-1 country code such as 'us', "
         "or a country name"),
    ],
)
def test_user_data_value_without_a_documented_form_is_refused(
        raw: InboundUserData, message: str) -> None:
    error = refusal(inbound(user_data=raw))

    assert (422, message) == (error.status, error.message)


def test_user_data_refusal_names_where_the_event_was() -> None:
    error = refusal(inbound(user_data=InboundUserData(em=EMAIL, db="1990-13-01")),
                    where="events[3]")

    assert error.message.startswith("events[3].user_data.db ")


@pytest.mark.parametrize(
    "raw",
    [InboundUserData(em=EMAIL, db="31/12/1990"), InboundUserData(em=EMAIL, country="Atlantis")],
)
def test_user_data_refusal_never_repeats_the_value(raw: InboundUserData) -> None:
    value = raw.db or raw.country
    assert isinstance(value, str)

    error = refusal(inbound(user_data=raw))

    assert value not in f"{error} {error.message}"


def test_clear_keys_are_copied_trimmed_and_not_hashed() -> None:
    raw = InboundUserData(client_ip_address=" 2001:db8::1 ", client_user_agent=USER_AGENT,
                          fbc=FBC, fbp=FBP, fb_login_id="42", lead_id="7",
                          subscription_id="s")

    user = build(inbound(user_data=raw)).user_data

    assert UserData(client_ip_address="2001:db8::1", client_user_agent=USER_AGENT, fbc=FBC,
                    fbp=FBP, fb_login_id="42", lead_id="7", subscription_id="s") == user


def test_blank_clear_key_is_dropped() -> None:
    raw = InboundUserData(em=EMAIL, fbc="   ", client_user_agent=USER_AGENT)

    assert None is build(inbound(user_data=raw)).user_data.fbc


def test_raw_personal_data_never_reaches_the_built_event() -> None:
    raw = InboundUserData(em="Jane.Doe@Example.com", ph="+1 (650) 555-1212", fn="Janette",
                          ln="Doe-Smithers", ct="Springfield", zp="94025-1234", db="1990-01-31",
                          client_user_agent=USER_AGENT)

    body = msgspec.json.encode(build(inbound(user_data=raw)))

    for secret in (b"Jane.Doe@Example.com", b"jane.doe@example.com", b"6505551212",
                   b"Janette", b"janette", b"Smithers", b"Springfield", b"94025", b"19900131"):
        assert secret not in body


def test_optional_fields_are_carried_over() -> None:
    built = build(inbound(referrer_url="https://ref.example", opt_out=True,
                          data_processing_options=["LDU"], data_processing_options_country=1,
                          data_processing_options_state=1000))

    assert ("https://ref.example", True, ["LDU"], 1, 1000) == (
        built.referrer_url, built.opt_out, built.data_processing_options,
        built.data_processing_options_country, built.data_processing_options_state)


def test_unknown_user_data_key_is_refused_by_the_model() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"event_name": "X", "user_data": {"email": "a@b.c"}}',
                            type=InboundEvent)


# -- enrich_from_click ----------------------------------------------------------------------------
CLICK = ClickContext(click_id="c-1", slug="demo", time_ms=1, fbc=FBC, fbp=FBP,
                     client_ip_address="198.51.100.9", client_user_agent="ClickAgent/1.0")


def test_enrichment_fills_missing_keys_from_the_click() -> None:
    event = meta_event(client_user_agent=None, client_ip_address=None)

    enriched = enrich_from_click(event, CLICK)

    assert UserData(em=event.user_data.em, fbc=FBC, fbp=FBP, client_ip_address="198.51.100.9",
                    client_user_agent="ClickAgent/1.0") == enriched.user_data


def test_enrichment_keeps_keys_the_event_has() -> None:
    event = meta_event(fbc="fb.1.1700000000001.own", fbp="fb.1.1700000000001.99",
                       client_ip_address="203.0.113.7", client_user_agent=USER_AGENT)

    assert event.user_data == enrich_from_click(event, CLICK).user_data


def test_enrichment_changes_nothing_but_user_data() -> None:
    event = meta_event(client_user_agent=None)

    enriched = enrich_from_click(event, CLICK)

    assert msgspec.structs.replace(event, user_data=enriched.user_data) == enriched


# -- Envelope -------------------------------------------------------------------------------------
def test_dedup_key_is_pixel_event_name_and_event_id() -> None:
    env = Envelope(pixel_id="111", event=meta_event("order-9", event_name="Lead"),
                   received_ms=0, source="server")

    assert "111:Lead:order-9" == env.dedup_key


def test_envelope_survives_encoding() -> None:
    env = Envelope(pixel_id="111", event=meta_event("order-9"), received_ms=5, source="beacon",
                   click_id="c-1")

    assert env == decode_envelope(encode(env))


# -- the packed form stored in the inbox ----------------------------------------------------------
def _purchase_envelope() -> Envelope:
    hashed = hashlib.sha256(b"jane@example.com").hexdigest()
    user = UserData(em=[hashed, "~not-hex", "ABC"], ph=hashed, client_ip_address="203.0.113.7",
                    client_user_agent="Mozilla/5.0", fbc="fb.1.1700000000000.abc")
    event = MetaEvent(event_name="Purchase", event_time=1_700_000_000, event_id="order-1",
                      action_source="website", user_data=user,
                      event_source_url="https://shop.example/thanks",
                      custom_data={"value": 12.5, "currency": "EUR"})
    return Envelope(pixel_id="123", event=event, received_ms=1_700_000_000_123, source="server",
                    click_id="c-1")


def test_a_packed_envelope_decodes_to_the_same_envelope() -> None:
    env = _purchase_envelope()

    assert env == decode_envelope(pack_envelope(env))


def test_a_test_event_code_survives_packing_and_only_then_changes_the_version() -> None:
    plain = _purchase_envelope()
    tested = msgspec.structs.replace(plain, test_event_code="TEST123")

    assert (tested, b"[1,", b"[2,") == (decode_envelope(pack_envelope(tested)),
                                        pack_envelope(plain)[:3], pack_envelope(tested)[:3])
    assert pack_envelope(plain) == pack_envelope(tested).replace(b'"TEST123",', b"", 1) \
        .replace(b"[2,", b"[1,", 1)


def test_packing_halves_a_server_event() -> None:
    env = _purchase_envelope()

    assert len(pack_envelope(env)) < 0.7 * len(encode(env))


def test_an_envelope_stored_as_a_json_object_before_packing_still_decodes() -> None:
    env = _purchase_envelope()

    assert env == decode_envelope(encode(env))


def test_a_malformed_packed_envelope_is_a_validation_error() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_envelope(b'[1, "123"]')


def test_the_stored_field_order_only_grows_at_the_end() -> None:
    # Packed envelopes in Redis are positional: reordering or inserting fields would misread
    # the ones already stored. Add new fields at the end, then extend these lists.
    assert ("event_name", "event_time", "event_id", "action_source", "user_data",
            "event_source_url", "referrer_url", "custom_data", "opt_out",
            "data_processing_options", "data_processing_options_country",
            "data_processing_options_state", "app_data", "original_event_data",
            "attribution_data", "customer_segmentation", "messaging_channel",
            "passthrough") == MetaEvent.__struct_fields__[:18]
    assert ("em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country", "external_id",
            "client_ip_address", "client_user_agent", "fbc", "fbp", "subscription_id",
            "fb_login_id", "lead_id", "anon_id", "madid", "page_id", "page_scoped_user_id",
            "ctwa_clid", "ig_account_id", "ig_sid") == UserData.__struct_fields__[:25]


def test_extension_fields_and_passthrough_survive_packing() -> None:
    env = _purchase_envelope()
    env = msgspec.structs.replace(env, event=msgspec.structs.replace(
        env.event, app_data={"advertiser_tracking_enabled": 1}, passthrough={"x_new": [1]}))

    assert env == decode_envelope(pack_envelope(env))
