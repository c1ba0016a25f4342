"""relay.limiter: per-pixel token buckets and the slow-down after Meta's throttling."""

from __future__ import annotations

import fakeredis
import pytest

from relay.limiter import PixelLimiter, PixelRates

PIXEL = "111"
T0 = 1_790_000_000_000
RECOVERY_MS = 30_000


def limiter(redis: fakeredis.FakeRedis) -> PixelLimiter:
    return PixelLimiter(redis, recovery_s=RECOVERY_MS / 1000, floor=1 / 32)


# -- request bucket -------------------------------------------------------------------------------
def test_first_request_goes_at_once(redis: fakeredis.FakeRedis) -> None:
    assert 0 == limiter(redis).acquire(PIXEL, PixelRates(1, 1000), 1, now_ms=T0)


def test_second_request_within_the_same_ms_waits(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    lim.acquire(PIXEL, PixelRates(1, 1000), 1, now_ms=T0)

    assert 1000 == lim.acquire(PIXEL, PixelRates(1, 1000), 1, now_ms=T0)


def test_bucket_holds_one_second_of_requests(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)

    waits = [lim.acquire(PIXEL, PixelRates(4, 1000), 1, now_ms=T0) for _ in range(5)]

    assert [0, 0, 0, 0, 250] == waits


def test_request_token_refills_over_time(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    lim.acquire(PIXEL, PixelRates(2, 1000), 1, now_ms=T0)
    lim.acquire(PIXEL, PixelRates(2, 1000), 1, now_ms=T0)

    assert (250, 0) == (lim.acquire(PIXEL, PixelRates(2, 1000), 1, now_ms=T0 + 250),
                        lim.acquire(PIXEL, PixelRates(2, 1000), 1, now_ms=T0 + 500))


def test_waiting_request_takes_no_token(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    lim.acquire(PIXEL, PixelRates(1, 1000), 1, now_ms=T0)
    lim.acquire(PIXEL, PixelRates(1, 1000), 1, now_ms=T0 + 500)

    assert 0 == lim.acquire(PIXEL, PixelRates(1, 1000), 1, now_ms=T0 + 1000)


def test_pixels_have_their_own_buckets(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    lim.acquire(PIXEL, PixelRates(1, 1000), 1, now_ms=T0)

    assert 0 == lim.acquire("222", PixelRates(1, 1000), 1, now_ms=T0)


# -- event bucket ---------------------------------------------------------------------------------
def test_events_beyond_the_event_bucket_wait(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    lim.acquire(PIXEL, PixelRates(100, 10), 8, now_ms=T0)

    assert 100 == lim.acquire(PIXEL, PixelRates(100, 10), 3, now_ms=T0)


def test_events_within_the_event_bucket_go(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    lim.acquire(PIXEL, PixelRates(100, 10), 8, now_ms=T0)

    assert 0 == lim.acquire(PIXEL, PixelRates(100, 10), 2, now_ms=T0)


def test_batch_larger_than_the_bucket_goes_when_the_bucket_is_full(
        redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)

    assert 0 == lim.acquire(PIXEL, PixelRates(100, 10), 50, now_ms=T0)


def test_batch_larger_than_the_bucket_leaves_a_debt(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    lim.acquire(PIXEL, PixelRates(100, 10), 50, now_ms=T0)

    # 40 events over: 4 s to pay back, plus 1 s to earn the next event
    assert 4100 == lim.acquire(PIXEL, PixelRates(100, 10), 1, now_ms=T0)


# -- throttling -----------------------------------------------------------------------------------
def test_unthrottled_pixel_runs_at_full_rate(redis: fakeredis.FakeRedis) -> None:
    assert 1.0 == limiter(redis).factor(PIXEL, now_ms=T0)


def test_throttled_halves_the_factor(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)

    assert [0.5, 0.25] == [lim.throttled(PIXEL, now_ms=T0), lim.throttled(PIXEL, now_ms=T0)]


def test_throttled_pixel_gets_half_the_requests(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    lim.throttled(PIXEL, now_ms=T0)

    waits = [lim.acquire(PIXEL, PixelRates(4, 1000), 1, now_ms=T0) for _ in range(3)]

    assert [0, 0, 500] == waits


def test_factor_never_drops_below_the_floor(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)

    factors = [lim.throttled(PIXEL, now_ms=T0) for _ in range(8)]

    assert (1 / 32, 1 / 32) == (factors[-1], lim.factor(PIXEL, now_ms=T0))


def test_factor_doubles_every_recovery_period(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    for _ in range(3):
        lim.throttled(PIXEL, now_ms=T0)

    assert [0.125, 0.25, 0.5, 1.0] == [lim.factor(PIXEL, now_ms=T0 + k * RECOVERY_MS)
                                       for k in range(4)]


def test_factor_recovers_smoothly(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    lim.throttled(PIXEL, now_ms=T0)

    assert 0.5 * 2 ** 0.5 == pytest.approx(lim.factor(PIXEL, now_ms=T0 + RECOVERY_MS // 2))


def test_factor_never_recovers_beyond_full_rate(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    lim.throttled(PIXEL, now_ms=T0)

    assert 1.0 == lim.factor(PIXEL, now_ms=T0 + 10 * RECOVERY_MS)


def test_throttling_after_recovery_halves_the_recovered_factor(
        redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    lim.throttled(PIXEL, now_ms=T0)
    lim.throttled(PIXEL, now_ms=T0)

    assert 0.25 == lim.throttled(PIXEL, now_ms=T0 + RECOVERY_MS)


def test_recovered_pixel_gets_its_full_rate_again(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    lim.throttled(PIXEL, now_ms=T0)
    later = T0 + 10 * RECOVERY_MS

    waits = [lim.acquire(PIXEL, PixelRates(4, 1000), 1, now_ms=later) for _ in range(5)]

    assert [0, 0, 0, 0, 250] == waits


def test_answers_to_requests_sent_before_a_slow_down_do_not_halve_again(
        redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    lim.throttled(PIXEL, now_ms=T0 + 10, sent_ms=T0)

    again = [lim.throttled(PIXEL, now_ms=T0 + 20, sent_ms=T0 + 5) for _ in range(7)]

    assert [0.5] * 7 == [pytest.approx(f, rel=1e-3) for f in again]


def test_throttling_one_pixel_leaves_others_alone(redis: fakeredis.FakeRedis) -> None:
    lim = limiter(redis)
    lim.throttled(PIXEL, now_ms=T0)

    assert 1.0 == lim.factor("222", now_ms=T0)
