"""relay.deadletters: per-event dead letters with their reason, and the operator's requeue."""

from __future__ import annotations

import time

import fakeredis

from relay import keys
from relay.deadletters import DeadLetters
from relay.dedup import Claim, Dedup
from relay.events import decode_envelope
from tests.relay.factories import PIXEL, envelope

TTL_S = 7 * 86_400
QUEUE = "relay_high"
REASON = {"kind": "rejected", "message": "bad fbc", "code": 100, "subcode": 2804001}


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

    moved = dead.requeue(env.dedup_key, QUEUE)

    inbox = redis.lrange(keys.inbox(QUEUE, PIXEL), 0, -1)
    assert (True, [env], {PIXEL.encode()}) == (
        moved, [decode_envelope(i) for i in inbox],
        redis.smembers(keys.inbox_pixels(QUEUE)))


def test_requeue_removes_the_letter(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, TTL_S)
    env = envelope("e1")
    dead.add([env], REASON)

    dead.requeue(env.dedup_key, QUEUE)

    assert (None, 0) == (dead.get(env.dedup_key), dead.count())


def test_requeue_releases_the_dedup_claim(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, TTL_S)
    dedup = Dedup(redis, 3600)
    env = envelope("e1")
    dedup.claim("old-batch", [env.dedup_key])
    dead.add([env], REASON)

    dead.requeue(env.dedup_key, QUEUE)

    assert [Claim.CLAIMED] == dedup.claim("new-batch", [env.dedup_key])


def test_requeue_marks_the_state_requeued_keeping_its_ttl(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, TTL_S)
    env = envelope("e1")
    redis.set(keys.state(env.dedup_key), "dead", ex=500)
    dead.add([env], REASON)

    dead.requeue(env.dedup_key, QUEUE)

    assert (b"requeued", 500) == (redis.get(keys.state(env.dedup_key)),
                                  redis.ttl(keys.state(env.dedup_key)))


def test_requeue_of_an_unknown_letter_is_false(redis: fakeredis.FakeRedis) -> None:
    assert (False, []) == (DeadLetters(redis, TTL_S).requeue("111:Purchase:x", QUEUE),
                           redis.keys("*"))


def test_second_requeue_does_nothing(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, TTL_S)
    env = envelope("e1")
    dead.add([env], REASON)
    dead.requeue(env.dedup_key, QUEUE)

    assert (False, 1) == (dead.requeue(env.dedup_key, QUEUE),
                          redis.llen(keys.inbox(QUEUE, PIXEL)))
