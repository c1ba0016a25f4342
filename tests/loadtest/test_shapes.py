"""The load plans: the day's curve and the other shapes' rates over time."""

from __future__ import annotations

import pytest

from loadtest.shapes import (
    DAY_OVERTIME,
    DayPlan,
    RampPlan,
    SpikePlan,
    SteadyPlan,
    day_curve,
    make_plan,
    users_for,
)


def curve(step_h: float = 0.05) -> list[tuple[float, float]]:
    return [(i * step_h, day_curve(i * step_h)) for i in range(int(24 / step_h))]


def test_the_day_plan_asks_for_its_events_within_its_duration() -> None:
    plan = DayPlan("day", 240, 50_000)

    assert 50_000 == pytest.approx(plan.total_events(), rel=0.001)


def test_the_evening_peak_is_about_three_times_the_mean_and_the_night_a_trough() -> None:
    evening = max(v for h, v in curve() if 18 <= h < 23)
    night = min(v for h, v in curve() if 1 <= h < 6)

    assert 2.7 <= evening <= 3.3
    assert night < 0.25


def test_the_campaign_spike_is_short_and_well_above_the_hours_around_it() -> None:
    values = dict(curve())

    assert values[12.75] > 2 * values[12.25]
    assert sum(1 for h, v in curve() if 11 <= h < 15 and v > 2) * 0.05 <= 0.5


def test_a_day_that_fell_behind_continues_at_the_mean_rate_then_ends() -> None:
    plan = DayPlan("day", 100, 10_000)

    assert 100 == plan.rate_at(110)
    assert plan.rate_at(DAY_OVERTIME * 100) is None


def test_steady_holds_its_rate_for_its_duration() -> None:
    plan = SteadyPlan("steady", 60, 250)

    assert [250, 250, None] == [plan.rate_at(0), plan.rate_at(59.9), plan.rate_at(60)]


def test_spike_jumps_to_twenty_times_for_thirty_seconds() -> None:
    plan = SpikePlan("spike", 90, 10)

    assert [10, 200, 200, 10, None] == [plan.rate_at(t) for t in (29.9, 30, 59.9, 60, 90)]


def test_ramp_steps_up_by_its_rate_every_step() -> None:
    plan = make_plan("ramp", events=0, duration_s=0, rate=100, step_s=15, max_steps=3)

    assert isinstance(plan, RampPlan)
    assert [100, 100, 200, 300, None] == [plan.rate_at(t) for t in (0, 14.9, 15, 44.9, 45)]


def test_an_unknown_shape_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown shape 'flat'"):
        make_plan("flat", events=1, duration_s=1, rate=1, step_s=1, max_steps=1)


def test_users_are_enough_for_the_rate_and_never_zero() -> None:
    assert [1, 1, 50, 51] == [users_for(r, 2.0) for r in (0, 2, 100, 101)]


def test_a_day_may_be_given_a_longer_overtime() -> None:
    plan = DayPlan("day", 100, 10_000, overtime_s=200)

    assert [100, None] == [plan.rate_at(299), plan.rate_at(300)]
