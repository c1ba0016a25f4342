"""Property-based tests (hypothesis) of the event rules: the inbound schema, personal-data
normalization and hashing, and the fbc/fbp forms, for inputs nobody thought to write down.

Each property is one the product promises: bad input is a 4xx with a sentence (``InputError``),
never another exception; raw personal data never survives into what is stored; what the
collector makes, the relay's validation accepts.
"""

from __future__ import annotations

import time

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from collector.visitor import choose_fbc, choose_fbp, is_valid_fbc, is_valid_fbp, make_fbc, make_fbp
from relay.errors import InputError
from relay.events import (
    Envelope,
    InboundEvent,
    InboundUserData,
    MetaEvent,
    UserData,
    build_event,
    encode,
    hash_user_data,
    inbound_event,
)
from relay.hashing import NORMALIZERS, UnnormalizableValue, hash_user_field, hash_value
from relay.validation import problem

NOW_S = time.time()
NOW_MS = int(NOW_S * 1000)
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow])
HEX = "0123456789abcdef"

text = st.text(max_size=60)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)
# Cookie-octets of RFC 6265 (what a real fbclid is made of), as collector.visitor accepts them.
fbclid_chars = st.sampled_from(
    [chr(c) for c in range(0x21, 0x7F) if chr(c) not in ' ",;\\'])
fbclids = st.text(fbclid_chars, min_size=1, max_size=200)
emails = st.emails()


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= set(HEX)


# -- the inbound schema ---------------------------------------------------------------------------
@PROPERTY_SETTINGS
@given(json_values)
def test_any_json_body_decodes_or_is_refused_with_a_validation_error(body: object) -> None:
    decoded = msgspec.json.decode(msgspec.json.encode(body))  # as ingest decodes the body
    for item in decoded if isinstance(decoded, list) else [decoded]:
        try:
            inbound_event(item)
        except InputError as exc:
            # a 422 naming the field
            assert (422, True) == (exc.status, exc.message.startswith(("event", "invalid event")))


@PROPERTY_SETTINGS
@given(st.builds(
    InboundEvent,
    event_name=text,
    event_time=st.none() | st.integers(min_value=-2**40, max_value=2**45),
    event_id=st.none() | text,
    action_source=st.sampled_from(["website", "app", "email", "nonsense", ""]),
    event_source_url=st.none() | st.just("https://shop.example/p") | text,
    user_data=st.none() | st.builds(InboundUserData, em=st.none() | emails,
                                    ph=st.none() | text, fn=st.none() | text,
                                    ct=st.none() | text, country=st.none() | text,
                                    db=st.none() | text, zp=st.none() | text,
                                    fbc=st.none() | text,
                                    client_user_agent=st.none() | text),
    custom_data=st.none() | st.dictionaries(st.sampled_from(["value", "currency", "x"]),
                                            json_values, max_size=3),
    click_id=st.none() | text,
))
def test_build_event_returns_a_hashed_event_or_a_422_sentence(inbound: InboundEvent) -> None:
    try:
        event = build_event(inbound, now_s=NOW_S, max_age_days=7, max_future_skew_s=600)
    except InputError as exc:
        assert (422, True) == (exc.status, exc.message.startswith("event."))
        if inbound.user_data and inbound.user_data.em:
            assert inbound.user_data.em not in exc.message
        return
    assert isinstance(event, MetaEvent)
    stored = encode(Envelope(pixel_id="1", event=event, received_ms=NOW_MS, source="server"))
    if inbound.user_data and inbound.user_data.em and not is_sha256(inbound.user_data.em):
        assert inbound.user_data.em.encode() not in stored


# -- normalization and hashing --------------------------------------------------------------------
@PROPERTY_SETTINGS
@given(st.sampled_from(sorted(NORMALIZERS)), st.text(max_size=80))
def test_hash_value_gives_a_digest_nothing_or_a_named_refusal(key: str, value: str) -> None:
    try:
        hashed = hash_value(key, value)
    except UnnormalizableValue as exc:
        assert (key, True) == (exc.key, bool(exc.expected))
        return
    assert hashed is None or is_sha256(hashed)


@PROPERTY_SETTINGS
@given(st.sampled_from(sorted(NORMALIZERS)), st.text(HEX + "ABCDEF", min_size=64, max_size=64))
def test_a_value_already_hashed_passes_through_lowercased(key: str, digest: str) -> None:
    assert digest.lower() == hash_value(key, digest)


@PROPERTY_SETTINGS
@given(st.sampled_from(sorted(NORMALIZERS)), st.lists(st.text(max_size=30), max_size=5))
def test_a_list_hashes_to_a_list_of_digests_or_nothing(key: str, values: list[str]) -> None:
    try:
        hashed = hash_user_field(key, values)
    except UnnormalizableValue:
        return
    assert hashed is None or (isinstance(hashed, list) and 0 < len(hashed) <= len(values)
                              and all(is_sha256(h) for h in hashed))


@PROPERTY_SETTINGS
@given(emails)
def test_an_email_is_hashed_the_same_whatever_its_case_and_spaces(email: str) -> None:
    assert hash_value("em", email) == hash_value("em", f"  {email.upper()}\t")


@PROPERTY_SETTINGS
@given(st.builds(InboundUserData, em=st.none() | emails, ph=st.none() | st.text(max_size=20),
                 fn=st.none() | st.text(max_size=20), ln=st.none() | st.text(max_size=20),
                 ct=st.none() | st.text(max_size=20), zp=st.none() | st.text(max_size=10)))
def test_hashed_user_data_holds_only_digests_in_hashed_keys(raw: InboundUserData) -> None:
    try:
        hashed = hash_user_data(raw)
    except InputError as exc:
        assert 422 == exc.status
        return
    assert isinstance(hashed, UserData)
    for key in ("em", "ph", "fn", "ln", "ct", "zp"):
        value = getattr(hashed, key)
        assert value is None or is_sha256(value), key


# -- fbc and fbp ----------------------------------------------------------------------------------
@PROPERTY_SETTINGS
@given(fbclids, st.integers(min_value=10**12, max_value=10**13))
def test_an_fbc_the_collector_makes_is_valid_for_the_relay_and_keeps_the_fbclid(
        fbclid: str, now_ms: int) -> None:
    fbc = make_fbc(fbclid, now_ms)
    event = MetaEvent("PageView", int(NOW_S), "e1", "website",
                      UserData(fbc=fbc, client_user_agent="Mozilla/5.0", em="a" * 64),
                      event_source_url="https://shop.example/")

    assert (True, fbclid, None) == (is_valid_fbc(fbc), fbc.split(".", 3)[3], problem(event, NOW_S))


@PROPERTY_SETTINGS
@given(st.integers(min_value=10**12, max_value=10**13))
def test_an_fbp_the_collector_makes_is_valid_for_the_relay(now_ms: int) -> None:
    fbp = make_fbp(now_ms)
    event = MetaEvent("PageView", int(NOW_S), "e1", "website",
                      UserData(fbp=fbp, client_user_agent="Mozilla/5.0", em="a" * 64),
                      event_source_url="https://shop.example/")

    assert (True, None) == (is_valid_fbp(fbp), problem(event, NOW_S))


@PROPERTY_SETTINGS
@given(st.none() | st.text(max_size=300), st.none() | st.text(max_size=300))
def test_choose_fbc_never_returns_an_invalid_fbc(fbclid: str | None, cookie: str | None) -> None:
    fbc, set_cookie = choose_fbc(fbclid, cookie, NOW_MS)

    assert fbc is None or is_valid_fbc(fbc)
    assert not set_cookie or fbc is not None


@PROPERTY_SETTINGS
@given(fbclids)
@example("IwAR.with.dots")  # once replaced on every click: the stored fbclid was cut at a dot
def test_choose_fbc_keeps_a_cookie_that_carries_the_same_fbclid(fbclid: str) -> None:
    cookie = make_fbc(fbclid, NOW_MS - 86_400_000)

    assert (cookie, False) == choose_fbc(fbclid, cookie, NOW_MS)


@PROPERTY_SETTINGS
@given(st.none() | st.text(max_size=100))
def test_choose_fbp_keeps_a_valid_cookie_and_replaces_anything_else(cookie: str | None) -> None:
    fbp, set_cookie = choose_fbp(cookie, NOW_MS)

    assert is_valid_fbp(fbp)
    assert (fbp == cookie) is (not set_cookie)
