"""Load plans: the target rate of events per second at each moment of a run.

Pure functions of time, so they are unit-tested without locust; ``locustfile.PlannedShape``
turns a rate into a number of simulated people. ``make_plan`` builds one by name:

- ``day``: ``events`` along a day's curve compressed into ``duration_s``: a night trough (about
  a sixth of the mean), a morning rise, an evening peak about 3x the mean, and a short campaign
  spike (the ad set going live) at lunch time; if the generator fell behind, the rest at the
  mean rate for up to ``overtime_s`` (a quarter of ``duration_s``) more;
- ``steady``: ``rate`` events/s for ``duration_s``;
- ``ramp``: from ``rate`` up by ``rate`` every ``step_s`` until the shape sees requests fail or
  the redirect p99 pass its bound (the knee), at most ``max_steps`` steps;
- ``spike``: ``rate`` for 30 s, 20x ``rate`` for 30 s, ``rate`` for 30 s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Relative traffic per hour of the day (0h..23h), from ad-click curves of consumer shops:
# lowest at 3-4h, evening peak at 20-21h. Normalized below so the mean is 1.
HOURLY = (0.40, 0.27, 0.20, 0.17, 0.17, 0.22, 0.36, 0.55, 0.75, 0.90, 1.00, 1.05,
          1.15, 1.10, 1.00, 1.00, 1.05, 1.25, 1.70, 2.50, 3.25, 3.00, 1.80, 0.90)
SPIKE_AT_H = 12.5  # the campaign spike: starts at 12:30 of the compressed day ...
SPIKE_LENGTH_H = 0.5  # ... lasts half an hour of it ...
SPIKE_EXTRA = 2.0  # ... and adds twice the day's mean rate on top of the curve
DAY_OVERTIME = 1.25  # how long past its duration a day may run to send what it fell short of
SPIKE_FACTOR = 20  # the spike plan's jump
SPIKE_PHASE_S = 30.0


def _hourly(hour: float, table: Sequence[float] = HOURLY) -> float:
    """The curve at ``hour`` (0..24), linear between the hours' values."""
    low = int(hour) % 24
    frac = hour - int(hour)
    return table[low] * (1 - frac) + table[(low + 1) % 24] * frac


def _raw_day(hour: float) -> float:
    spike = SPIKE_EXTRA if SPIKE_AT_H <= hour < SPIKE_AT_H + SPIKE_LENGTH_H else 0.0
    return _hourly(hour) + spike


def _mean_of_raw_day(samples: int = 24 * 60) -> float:
    return sum(_raw_day(24 * (i + 0.5) / samples) for i in range(samples)) / samples


_RAW_MEAN = _mean_of_raw_day()


def day_curve(hour: float) -> float:
    """Traffic at ``hour`` relative to the day's mean (the mean over 0..24 is 1)."""
    return _raw_day(hour) / _RAW_MEAN


@dataclass(frozen=True)
class Plan:
    """Target events/s at ``t`` seconds into the run; None once the plan is over."""

    name: str
    duration_s: float

    def rate_at(self, t: float) -> float | None:
        raise NotImplementedError

    def total_events(self, step_s: float = 0.1) -> float:
        """The events the plan asks for (its rate integrated over its duration)."""
        steps = int(self.duration_s / step_s)
        return sum((self.rate_at((i + 0.5) * step_s) or 0.0) * step_s for i in range(steps))


@dataclass(frozen=True)
class DayPlan(Plan):
    events: int = 50_000
    overtime_s: float | None = None  # None: a quarter of the duration (DAY_OVERTIME)

    @property
    def mean_rate(self) -> float:
        return self.events / self.duration_s

    def rate_at(self, t: float) -> float | None:
        if t >= self.duration_s:
            # A generator that fell behind sends the rest at the mean rate, for at most
            # overtime_s more; the shape stops once the events are acknowledged.
            overtime_s = ((DAY_OVERTIME - 1) * self.duration_s if self.overtime_s is None
                          else self.overtime_s)
            return self.mean_rate if t < self.duration_s + overtime_s else None
        return self.mean_rate * day_curve(24 * t / self.duration_s)


@dataclass(frozen=True)
class SteadyPlan(Plan):
    rate: float = 100.0

    def rate_at(self, t: float) -> float | None:
        return self.rate if t < self.duration_s else None


@dataclass(frozen=True)
class SpikePlan(Plan):
    rate: float = 50.0

    def rate_at(self, t: float) -> float | None:
        if t >= self.duration_s:
            return None
        return self.rate * (SPIKE_FACTOR if SPIKE_PHASE_S <= t < 2 * SPIKE_PHASE_S else 1)


@dataclass(frozen=True)
class RampPlan(Plan):
    rate: float = 100.0
    step_s: float = 15.0

    def step_of(self, t: float) -> int:
        return int(t // self.step_s)

    def rate_at(self, t: float) -> float | None:
        if t >= self.duration_s:
            return None
        return self.rate * (self.step_of(t) + 1)


def make_plan(name: str, *, events: int, duration_s: float, rate: float, step_s: float,
              max_steps: int, overtime_s: float | None = None) -> Plan:
    """The plan called ``name`` (``day``, ``steady``, ``ramp``, ``spike``)."""
    if name == "day":
        return DayPlan("day", duration_s, events, overtime_s)
    if name == "steady":
        return SteadyPlan("steady", duration_s, rate)
    if name == "ramp":
        return RampPlan("ramp", step_s * max_steps, rate, step_s)
    if name == "spike":
        return SpikePlan("spike", 3 * SPIKE_PHASE_S, rate)
    raise ValueError(f"unknown shape {name!r}: choose day, steady, ramp or spike")


def users_for(rate: float, events_per_user_s: float) -> int:
    """Simulated people needed for ``rate`` events/s when each makes ``events_per_user_s``."""
    return max(1, math.ceil(rate / events_per_user_s))
