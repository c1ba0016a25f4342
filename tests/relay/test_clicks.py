"""Click contexts in their day buckets (relay.clicks): ids, the stored form, reading, notes."""

from __future__ import annotations

import time

import fakeredis
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import clicks, keys
from relay.clicks import Clicks, bucket_of, day_of_click, decode_click, encode_click, new_click_id
from relay.events import ClickContext, encode
from relay.inbox import ClickWrite, store_sync

DAY_MS = 86_400_000
NOW_MS = 1_764_620_000_123
UA = ("Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 "
      "(KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.135 Mobile Safari/537.36 "
      "[FB_IAB/FB4A;FBAV/492.0.0.73.76;]")
FBCLID = "IwAR2F4-dbP0l7Mn1Iaw_QQGCINEz7PYXQvwjNwB_qa2ofrHyZxq8AlkDQ9r3Ub"


def a_click(click_id: str) -> ClickContext:
    return ClickContext(
        click_id=click_id, slug="summer-sale", time_ms=NOW_MS,
        fbc=f"fb.1.{NOW_MS}.{FBCLID}", fbp=f"fb.1.{NOW_MS}.1234567890",
        client_ip_address="203.0.113.45", client_user_agent=UA,
        utm={"utm_source": "facebook", "utm_medium": "paid_social", "utm_campaign": "spring"},
        page_url=f"https://shop.example/landing?cid={click_id}&utm_source=facebook",
        referrer_url="https://m.facebook.com/",
    )


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_a_click_id_carries_its_day_and_fits_telegrams_start_parameter() -> None:
    ids = {new_click_id(NOW_MS) for _ in range(1000)}

    assert 1000 == len(ids)
    assert {NOW_MS // DAY_MS} == {day_of_click(i) for i in ids}
    assert all(len(i) == clicks.CLICK_ID_LENGTH <= 64 for i in ids)
    assert all(set(i) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
               for i in ids)


def test_ids_of_the_layout_before_have_no_day_and_no_bucket() -> None:
    assert (None, None, None) == (day_of_click("AbCdEfGhIjKlMnOp"), bucket_of("c-1"),
                                  day_of_click("!!!AbCdEfGhIjKlMn"))


def test_clicks_of_one_day_share_a_few_hundred_hashes() -> None:
    buckets = {bucket_of(new_click_id(NOW_MS)) for _ in range(5000)}

    assert len(buckets) <= keys.CLICK_SLOTS
    assert all(b and b.startswith(f"pixelrelay:clk:{NOW_MS // DAY_MS}:") for b in buckets)


def test_the_stored_form_is_much_smaller_than_json_and_reads_back_the_same() -> None:
    click = a_click(new_click_id(NOW_MS))

    stored = encode_click(click)

    assert click == decode_click(click.click_id, stored)
    assert len(stored) < 0.6 * len(encode(click)), (len(stored), len(encode(click)))


@given(st.builds(
    ClickContext, click_id=st.just("AAAbcdefghijklmno"), slug=st.text(),
    time_ms=st.integers(0, 2**53),
    fbc=st.none() | st.text(), fbp=st.none() | st.text(),
    client_ip_address=st.none() | st.ip_addresses().map(str),
    client_user_agent=st.none() | st.text(),
    utm=st.none() | st.dictionaries(st.text(), st.text(), max_size=6),
    page_url=st.none() | st.text() | st.lists(st.text(), min_size=1).map(
        "AAAbcdefghijklmno".join),  # the landing URL usually holds the click id
    referrer_url=st.none() | st.text()))
def test_any_click_reads_back_as_it_was_stored(click: ClickContext) -> None:
    assert click == decode_click(click.click_id, encode_click(click))


def test_a_json_click_of_the_layout_before_still_reads(redis: fakeredis.FakeRedis) -> None:
    old = ClickContext(click_id="AbCdEfGhIjKlMnOp", slug="demo", time_ms=1, fbc="fb.1.1.x")
    redis.set(keys.click(old.click_id), encode(old))

    assert old == Clicks(redis).get(old.click_id)


def test_a_value_of_an_unknown_version_or_garbage_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_click("AAAbcdefghijklmno", b"\x09garbage")
    with pytest.raises(msgspec.ValidationError):
        decode_click("AAAbcdefghijklmno", b"\x01not deflate at all")


def test_store_puts_a_click_in_its_days_hash_expiring_after_its_day_plus_the_ttl(
        redis: fakeredis.FakeRedis) -> None:
    click = a_click(new_click_id(int(time.time() * 1000)))

    store_sync(redis, [ClickWrite(click.click_id, 7 * 86_400, encode_click(click))], 3600)

    bucket = bucket_of(click.click_id) or ""
    day_end_s = (int(time.time()) // 86_400 + 1) * 86_400
    assert ([bucket.encode()], 1) == (redis.keys("*"), redis.hlen(bucket))
    assert abs(day_end_s + 7 * 86_400 - int(time.time()) - redis.ttl(bucket)) <= 2
    assert click == Clicks(redis).get(click.click_id)


def test_get_many_reads_new_and_old_layouts_in_one_go_and_leaves_out_unknown_ones(
        redis: fakeredis.FakeRedis) -> None:
    new = a_click(new_click_id(int(time.time() * 1000)))
    old = ClickContext(click_id="AbCdEfGhIjKlMnOp", slug="demo", time_ms=1)
    store_sync(redis, [ClickWrite(new.click_id, 600, encode_click(new))], 3600)
    redis.set(keys.click(old.click_id), encode(old))

    found = Clicks(redis).get_many([new.click_id, old.click_id, "gone", new_click_id(NOW_MS)])

    assert {new.click_id: new, old.click_id: old} == found


def test_later_events_are_noted_in_the_clicks_hash_and_read_back(
        redis: fakeredis.FakeRedis) -> None:
    click = a_click(new_click_id(int(time.time() * 1000)))
    other = a_click(new_click_id(int(time.time() * 1000)))
    store_sync(redis, [ClickWrite(c.click_id, 600, encode_click(c)) for c in (click, other)],
               3600)

    pipe = redis.pipeline()
    Clicks.note_later(pipe, click.click_id, "123:Purchase:order-9", 600)
    Clicks.note_later(pipe, click.click_id, "123:Lead:lead-1", 600)
    Clicks.note_later(pipe, other.click_id, "123:Lead:lead-2", 600)
    pipe.execute()

    assert ["123:Lead:lead-1", "123:Purchase:order-9"] == Clicks(redis).later_events(
        click.click_id)
    assert click == Clicks(redis).get(click.click_id)  # the note is not mistaken for the click


def test_later_events_of_a_click_of_the_layout_before_use_its_old_set(
        redis: fakeredis.FakeRedis) -> None:
    pipe = redis.pipeline()
    Clicks.note_later(pipe, "AbCdEfGhIjKlMnOp", "123:Lead:lead-1", 600)
    pipe.execute()

    assert (["123:Lead:lead-1"], 600) == (Clicks(redis).later_events("AbCdEfGhIjKlMnOp"),
                                          redis.ttl(keys.click_events("AbCdEfGhIjKlMnOp")))
