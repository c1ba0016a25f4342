"""relay.dedup: an event is claimed by one batch, and sent at most once in the window."""

from __future__ import annotations

import fakeredis

from relay import keys
from relay.dedup import Claim, Dedup

WINDOW_S = 48 * 3600


def test_first_claim_wins(redis: fakeredis.FakeRedis) -> None:
    assert [Claim.CLAIMED, Claim.CLAIMED] == Dedup(redis, WINDOW_S).claim("b1", ["k1", "k2"])


def test_claim_by_another_batch_is_a_duplicate(redis: fakeredis.FakeRedis) -> None:
    dedup = Dedup(redis, WINDOW_S)
    dedup.claim("b1", ["k1"])

    assert [Claim.DUPLICATE, Claim.CLAIMED] == dedup.claim("b2", ["k1", "k2"])


def test_same_batch_claims_again_on_redelivery(redis: fakeredis.FakeRedis) -> None:
    dedup = Dedup(redis, WINDOW_S)
    dedup.claim("b1", ["k1"])

    assert [Claim.CLAIMED] == dedup.claim("b1", ["k1"])


def test_sent_event_is_already_sent_for_its_own_batch(redis: fakeredis.FakeRedis) -> None:
    dedup = Dedup(redis, WINDOW_S)
    dedup.claim("b1", ["k1", "k2"])
    dedup.mark_sent("b1", ["k1"])

    assert [Claim.ALREADY_SENT, Claim.CLAIMED] == dedup.claim("b1", ["k1", "k2"])


def test_sent_event_is_a_duplicate_for_other_batches(redis: fakeredis.FakeRedis) -> None:
    dedup = Dedup(redis, WINDOW_S)
    dedup.claim("b1", ["k1"])
    dedup.mark_sent("b1", ["k1"])

    assert [Claim.DUPLICATE] == dedup.claim("b2", ["k1"])


def test_dead_event_is_skipped_by_its_own_batch_and_a_duplicate_for_others(
        redis: fakeredis.FakeRedis) -> None:
    dedup = Dedup(redis, WINDOW_S)
    dedup.claim("b1", ["k1"])
    dedup.mark_dead("b1", ["k1"])

    assert ([Claim.ALREADY_DEAD], [Claim.DUPLICATE]) == (dedup.claim("b1", ["k1"]),
                                                         dedup.claim("b2", ["k1"]))


def test_claims_expire_after_the_window(redis: fakeredis.FakeRedis) -> None:
    dedup = Dedup(redis, 3600)
    dedup.claim("b1", ["k1"])
    dedup.claim("b1", ["k2"])
    dedup.mark_sent("b1", ["k2"])

    assert (3600, 3600) == (redis.ttl(keys.dedup("k1")), redis.ttl(keys.dedup("k2")))


def test_claim_of_nothing_is_nothing(redis: fakeredis.FakeRedis) -> None:
    assert [] == Dedup(redis, WINDOW_S).claim("b1", [])


def test_marking_nothing_does_nothing(redis: fakeredis.FakeRedis) -> None:
    Dedup(redis, WINDOW_S).mark_dead("b1", [])

    assert [] == redis.keys("*")
