"""relay.deadletters: per-event dead letters with their reason, and the operator's requeue."""

from __future__ import annotations

import time

import fakeredis
import pytest

from relay import deadletters, keys
from relay.deadletters import DeadFilter, DeadLetters, Page
from relay.dedup import Claim, Dedup
from relay.events import decode_envelope
from relay.ledger import Actor
from tests.relay.factories import PIXEL, envelope

TTL_S = 7 * 86_400
QUEUE = "relay_high"
REASON = {"kind": "rejected", "message": "bad fbc", "code": 100, "subcode": 2804001}
BY = Actor.now("ops", "cli")


def test_added_letter_can_be_read_back(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, TTL_S)
    env = envelope("e1")
    before = int(time.time() * 1000)

    dead.add([env], REASON)

    letter = dead.get(env.dedup_key)
    assert (env.dedup_key, env, REASON, True) == (
        letter.dedup_key, letter.envelope, letter.reason,  # type: ignore[union-attr]
        letter.dead_at_ms >= before)  # type: ignore[union-attr]


def test_unknown_letter_is_none(redis: fakeredis.FakeRedis) -> None:
    assert None is DeadLetters(redis, TTL_S).get("111:Purchase:none")


def test_each_event_is_its_own_letter(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, TTL_S)

    dead.add([envelope("e1"), envelope("e2")], REASON)

    assert (2, {f"{PIXEL}:Purchase:e1", f"{PIXEL}:Purchase:e2"}) == (
        dead.count(), {d.dedup_key for d in dead.list()})


def test_list_shows_newest_first_and_pages(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, TTL_S)
    dead.add([envelope(f"e{i}") for i in range(3)], REASON)
    now_ms = int(time.time() * 1000)
    redis.zadd(keys.dead_letters(), {f"{PIXEL}:Purchase:e{i}": now_ms + i for i in range(3)})

    assert ([f"{PIXEL}:Purchase:e2", f"{PIXEL}:Purchase:e1"], [f"{PIXEL}:Purchase:e0"]) == (
        [d.dedup_key for d in dead.list(0, 2)], [d.dedup_key for d in dead.list(2, 2)])


def test_letter_record_expires_after_the_ttl(redis: fakeredis.FakeRedis) -> None:
    env = envelope("e1")

    DeadLetters(redis, 3600).add([env], REASON)

    assert 3600 == redis.ttl(keys.dead_letter(env.dedup_key))


def test_list_skips_letters_whose_record_expired(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, TTL_S)
    dead.add([envelope("e1"), envelope("e2")], REASON)
    redis.delete(keys.dead_letter(f"{PIXEL}:Purchase:e1"))

    assert [f"{PIXEL}:Purchase:e2"] == [d.dedup_key for d in dead.list()]


def test_old_entries_are_trimmed_from_the_index_on_add(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, 3600)
    redis.zadd(keys.dead_letters(), {"111:Purchase:ancient": 1})

    dead.add([envelope("e1")], REASON)

    assert [f"{PIXEL}:Purchase:e1".encode()] == redis.zrange(keys.dead_letters(), 0, -1)


def test_requeue_puts_the_event_back_into_its_inbox(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, TTL_S)
    env = envelope("e1")
    dead.add([env], REASON)

    moved = dead.requeue(env.dedup_key, QUEUE, BY)

    inbox = redis.lrange(keys.inbox(QUEUE, PIXEL), 0, -1)
    assert (True, [env], {PIXEL.encode()}) == (
        moved, [decode_envelope(i) for i in inbox],
        redis.smembers(keys.inbox_pixels(QUEUE)))


def test_requeue_removes_the_letter(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, TTL_S)
    env = envelope("e1")
    dead.add([env], REASON)

    dead.requeue(env.dedup_key, QUEUE, BY)

    assert (None, 0) == (dead.get(env.dedup_key), dead.count())


def test_requeue_releases_the_dedup_claim(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, TTL_S)
    dedup = Dedup(redis, 3600)
    env = envelope("e1")
    dedup.claim("old-batch", [env.dedup_key])
    dead.add([env], REASON)

    dead.requeue(env.dedup_key, QUEUE, BY)

    assert [Claim.CLAIMED] == dedup.claim("new-batch", [env.dedup_key])


def test_requeue_marks_the_state_requeued_keeping_its_ttl(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, TTL_S)
    env = envelope("e1")
    redis.set(keys.state(env.dedup_key), "dead", ex=500)
    dead.add([env], REASON)

    dead.requeue(env.dedup_key, QUEUE, BY)

    assert (b"requeued", 500) == (redis.get(keys.state(env.dedup_key)),
                                  redis.ttl(keys.state(env.dedup_key)))


def test_requeue_of_an_unknown_letter_is_false(redis: fakeredis.FakeRedis) -> None:
    assert (False, []) == (DeadLetters(redis, TTL_S).requeue("111:Purchase:x", QUEUE, BY),
                           redis.keys("*"))


def test_second_requeue_does_nothing(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, TTL_S)
    env = envelope("e1")
    dead.add([env], REASON)
    dead.requeue(env.dedup_key, QUEUE, BY)

    assert (False, 1) == (dead.requeue(env.dedup_key, QUEUE, BY),
                          redis.llen(keys.inbox(QUEUE, PIXEL)))


# -- filtering and paging ---------------------------------------------------------------------
def letters(redis: fakeredis.FakeRedis) -> DeadLetters:
    """30 letters, one a ms apart (e0 oldest): pixels alternate, every third is a Lead, the
    ones with an even number are rejected (code 100), the others expired."""
    dead = DeadLetters(redis, TTL_S)
    now = int(time.time() * 1000)
    for i in range(30):
        env = envelope(f"e{i}", pixel_id=("111", "222")[i % 2],
                       event_name="Lead" if i % 3 == 0 else "Purchase")
        reason = REASON if i % 2 == 0 else {"kind": "expired", "message": "too old"}
        dead.add([env], reason, now - 30 + i)
    return dead


def event_ids(page: Page) -> list[str]:
    return [d.envelope.event.event_id for d in page.letters]


def test_a_filter_on_three_facets_pages_newest_first(redis: fakeredis.FakeRedis) -> None:
    dead = letters(redis)
    where = DeadFilter(pixel="111", event="Lead", kind="rejected")

    first = dead.page(where, None, 3)
    second = dead.page(where, first.next_cursor, 3)

    # 111 and even and a Lead: 0, 6, 12, 18, 24
    assert (["e24", "e18", "e12"], ["e6", "e0"], None) == (
        event_ids(first), event_ids(second), second.next_cursor)


def test_a_walk_that_looks_at_its_most_stops_with_a_cursor(redis: fakeredis.FakeRedis) -> None:
    dead = letters(redis)
    where = DeadFilter(pixel="111", event="Lead", kind="rejected")

    # the smallest index is the Leads' (10): the first page looks at e27 ... e6
    short = dead.page(where, None, 10, scan_max=8)
    rest = dead.page(where, short.next_cursor, 10, scan_max=8)

    assert (["e24", "e18", "e12", "e6"], 8, ["e0"], None) == (
        event_ids(short), short.examined, event_ids(rest), rest.next_cursor)


def test_a_filter_by_age_stops_at_the_oldest_time(redis: fakeredis.FakeRedis) -> None:
    dead = letters(redis)
    newest = dead.list(0, 1)[0].dead_at_ms

    page = dead.page(DeadFilter(code="100", newer_than_ms=newest - 4), None, 50)

    assert (["e28", "e26"], None) == (event_ids(page), page.next_cursor)


def test_counts_of_a_filter_are_exact_while_cheap_and_else_an_upper_bound(
        redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = letters(redis)
    by_reason = dead.matching_count(DeadFilter(kind="rejected", code="100"))
    small = dead.matching_count(DeadFilter(pixel="111", event="Lead"))
    monkeypatch.setattr(deadletters, "EXACT_COUNT_MAX", 3)  # the Leads' index (10) is too big

    large = dead.matching_count(DeadFilter(pixel="111", event="Lead"))

    assert ((15, True), (5, True), (10, False)) == (by_reason, small, large)
