"""relay.dedup: an event is claimed by one batch, and sent at most once in the window."""

from __future__ import annotations

import fakeredis

from relay import keys
from relay.dedup import Claim, Dedup

WINDOW_S = 48 * 3600
NOW_S = 1_796_000_000
K1, K2 = "111:Purchase:k1", "111:Purchase:k2"


def test_first_claim_wins(redis: fakeredis.FakeRedis) -> None:
    assert [Claim.CLAIMED, Claim.CLAIMED] == Dedup(redis, WINDOW_S).claim("b1", [K1, K2])


def test_claim_by_another_batch_is_a_duplicate(redis: fakeredis.FakeRedis) -> None:
    dedup = Dedup(redis, WINDOW_S)
    dedup.claim("b1", ["111:Purchase:k1"])

    assert [Claim.DUPLICATE, Claim.CLAIMED] == dedup.claim("b2", [K1, K2])


def test_same_batch_claims_again_on_redelivery(redis: fakeredis.FakeRedis) -> None:
    dedup = Dedup(redis, WINDOW_S)
    dedup.claim("b1", ["111:Purchase:k1"])

    assert [Claim.CLAIMED] == dedup.claim("b1", ["111:Purchase:k1"])


def test_sent_event_is_already_sent_for_its_own_batch(redis: fakeredis.FakeRedis) -> None:
    dedup = Dedup(redis, WINDOW_S)
    dedup.claim("b1", [K1, K2])
    dedup.mark_sent("b1", ["111:Purchase:k1"])

    assert [Claim.ALREADY_SENT, Claim.CLAIMED] == dedup.claim("b1", [K1, K2])


def test_sent_event_is_a_duplicate_for_other_batches(redis: fakeredis.FakeRedis) -> None:
    dedup = Dedup(redis, WINDOW_S)
    dedup.claim("b1", ["111:Purchase:k1"])
    dedup.mark_sent("b1", ["111:Purchase:k1"])

    assert [Claim.DUPLICATE] == dedup.claim("b2", ["111:Purchase:k1"])


def test_dead_event_is_skipped_by_its_own_batch_and_a_duplicate_for_others(
        redis: fakeredis.FakeRedis) -> None:
    dedup = Dedup(redis, WINDOW_S)
    dedup.claim("b1", ["111:Purchase:k1"])
    dedup.mark_dead("b1", ["111:Purchase:k1"])

    assert ([Claim.ALREADY_DEAD], [Claim.DUPLICATE]) == (dedup.claim("b1", ["111:Purchase:k1"]),
                                                         dedup.claim("b2", ["111:Purchase:k1"]))


def test_claim_buckets_expire_a_day_after_the_window(redis: fakeredis.FakeRedis) -> None:
    dedup = Dedup(redis, 3600, clock=lambda: NOW_S)
    dedup.claim("b1", ["111:Purchase:k1"])
    dedup.mark_sent("b1", ["111:Purchase:k2"])

    buckets = redis.keys(f"{keys.PREFIX}:claim:*")
    assert [3600 + 86_400] * 2 == [redis.ttl(b) for b in buckets]


def test_a_claim_older_than_the_window_no_longer_counts(redis: fakeredis.FakeRedis) -> None:
    # Given a claim made 25 hours ago, in yesterday's bucket, with a window of 24 hours
    Dedup(redis, 86_400, clock=lambda: NOW_S - 25 * 3600).claim("b1", ["111:Purchase:k1"])

    # Then another batch may claim it now, while one of 23 hours ago still counts
    later = Dedup(redis, 86_400, clock=lambda: NOW_S)
    Dedup(redis, 86_400, clock=lambda: NOW_S - 23 * 3600).claim("b1", ["111:Purchase:k2"])
    assert [Claim.CLAIMED, Claim.DUPLICATE] == later.claim(
        "b2", [K1, K2])


def test_claims_are_fields_of_per_pixel_day_and_slot_hashes(redis: fakeredis.FakeRedis) -> None:
    Dedup(redis, WINDOW_S, clock=lambda: NOW_S).claim("b1", ["111:Purchase:k1"])

    bucket = keys.claim_bucket("111", keys.day_of(NOW_S * 1000), keys.slot_of("k1"))
    assert {b"Purchase:k1": f"{NOW_S * 1000}|b1".encode()} == redis.hgetall(bucket)


def test_a_claim_of_the_layout_before_an_upgrade_still_counts(
        redis: fakeredis.FakeRedis) -> None:
    # Given claims written by the version before the ledger buckets
    redis.set(keys.dedup("111:Purchase:k1"), "done:b1", ex=3600)
    redis.set(keys.dedup("111:Purchase:k2"), "b1", ex=3600)

    # Then its batch skips the sent one and sends the other; another batch sees duplicates
    dedup = Dedup(redis, WINDOW_S)
    assert ([Claim.ALREADY_SENT, Claim.CLAIMED], [Claim.DUPLICATE, Claim.DUPLICATE]) == (
        dedup.claim("b1", [K1, K2]),
        dedup.claim("b2", [K1, K2]))


def test_claim_of_nothing_is_nothing(redis: fakeredis.FakeRedis) -> None:
    assert [] == Dedup(redis, WINDOW_S).claim("b1", [])


def test_marking_nothing_does_nothing(redis: fakeredis.FakeRedis) -> None:
    Dedup(redis, WINDOW_S).mark_dead("b1", [])

    assert [] == redis.keys("*")
