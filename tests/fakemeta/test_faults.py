"""Fault dice and the per-pixel token bucket, without HTTP."""

from __future__ import annotations

from collections import Counter

import pytest

from fakemeta import FakeMetaOptions
from fakemeta._faults import FaultOverride, Faults
from tests.fakemeta.conftest import FakeClock


def draw_codes(faults: Faults, draws: int) -> Counter[int | None]:
    return Counter(
        None if (error := faults.draw_error()) is None else error.code for _ in range(draws)
    )


def test_each_error_rate_is_the_share_of_requests_that_get_that_code() -> None:
    options = FakeMetaOptions(error_rates={2: 0.1, 613: 0.05}, http_500_rate=0.05, seed=1)

    codes = draw_codes(Faults(options, FakeClock()), 20_000)

    # code 1 is the body of an injected HTTP 500
    assert 0.09 < codes[2] / 20_000 < 0.11
    assert 0.04 < codes[613] / 20_000 < 0.06
    assert 0.04 < codes[1] / 20_000 < 0.06


def test_same_seed_draws_the_same_faults() -> None:
    options = FakeMetaOptions(error_rates={2: 0.3}, seed=99)

    def codes(faults: Faults) -> list[int | None]:
        return [None if (e := faults.draw_error()) is None else e.code for _ in range(50)]

    first = codes(Faults(options, FakeClock()))

    assert first == codes(Faults(options, FakeClock()))
    assert {None, 2} == set(first)


def test_error_pixels_limit_the_injected_errors_to_those_pixels() -> None:
    faults = Faults(FakeMetaOptions(error_rates={613: 1.0}, seed=3), FakeClock())
    faults.apply(FaultOverride(error_pixels=["111"]))

    hits = [None if (e := faults.draw_error(pixel)) is None else e.code
            for pixel in ("111", "222", "111", "222")]

    assert [613, None, 613, None] == hits
    assert ["111"] == faults.snapshot()["error_pixels"]
    faults.apply(FaultOverride(error_pixels=[]))
    assert 613 == getattr(faults.draw_error("222"), "code", None)


def test_jitter_stays_around_the_latency_and_never_below_zero() -> None:
    faults = Faults(FakeMetaOptions(latency_ms=10, latency_jitter_ms=30, seed=5), FakeClock())

    delays = [faults.latency_s() for _ in range(1000)]

    assert 0.0 == min(delays)
    assert max(delays) <= 0.040


def test_bucket_allows_one_second_of_events_then_throttles() -> None:
    faults = Faults(FakeMetaOptions(throttle_events_per_s=10), FakeClock())

    assert [True, False] == [faults.take_budget("1", 10), faults.take_budget("1", 1)]


def test_bucket_refills_at_the_configured_rate() -> None:
    clock = FakeClock()
    faults = Faults(FakeMetaOptions(throttle_events_per_s=10), clock)
    faults.take_budget("1", 10)

    clock.advance(0.5)

    assert [True, False] == [faults.take_budget("1", 5), faults.take_budget("1", 1)]


def test_batch_larger_than_the_bucket_passes_once_then_waits_off_its_debt() -> None:
    clock = FakeClock()
    faults = Faults(FakeMetaOptions(throttle_events_per_s=10), clock)

    assert faults.take_budget("1", 30)
    clock.advance(1.5)  # 30 events at 10/s take 3 s to pay off
    assert not faults.take_budget("1", 1)
    clock.advance(1.5)
    assert faults.take_budget("1", 10)


def test_override_changes_only_the_named_settings() -> None:
    faults = Faults(FakeMetaOptions(latency_ms=5, http_500_rate=0.1), FakeClock())

    faults.apply(FaultOverride(latency_ms=50))

    assert (50, 0.1) == (faults.latency_ms, faults.http_500_rate)


def test_override_out_of_range_changes_nothing() -> None:
    faults = Faults(FakeMetaOptions(latency_ms=5), FakeClock())

    with pytest.raises(ValueError, match="http_500_rate"):
        faults.apply(FaultOverride(latency_ms=50, http_500_rate=3.0))

    assert 5 == faults.latency_ms


def test_outage_override_starts_now_and_zero_ends_it() -> None:
    clock = FakeClock()
    faults = Faults(FakeMetaOptions(), clock)
    clock.advance(100)

    faults.apply(FaultOverride(outage_s=10))
    during = faults.in_outage()
    faults.apply(FaultOverride(outage_s=0))

    assert (True, False) == (during, faults.in_outage())
