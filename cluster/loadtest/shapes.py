"""Open-loop arrival schedules: a Poisson process whose rate follows a load shape (constant, step, ramp, burst).

Arrivals never wait for answers (open loop), so an overloaded cluster shows up as growing latency and
retryable errors instead of silently slowing the client down, as closed-loop user models (locust) do.
Non-homogeneous Poisson arrivals are drawn by thinning: candidates at the peak rate, each kept with
probability rate(t) / peak.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

SHAPES = ("constant", "step", "ramp", "burst")


@dataclass(frozen=True)
class LoadShape:
    """Requests per second over a run of `duration_s`: `base` rate, rising to `peak` as the shape says.

    step: base for the first third, peak for the second, base again for the last (scale up, then down);
    ramp: linear from base to peak over the whole run; burst: peak for `burst_s` every `period_s`, else base.
    """

    kind: str
    base: float
    peak: float
    duration_s: float
    burst_s: float = 10.0
    period_s: float = 60.0

    def __post_init__(self) -> None:
        if self.kind not in SHAPES:
            raise ValueError(f"unknown load shape {self.kind!r}; one of {SHAPES}")
        if self.base < 0 or self.peak < self.base or self.peak <= 0 or self.duration_s <= 0:
            raise ValueError("need 0 <= base <= peak, peak > 0 and duration_s > 0")

    def rate(self, t: float) -> float:
        rates: dict[str, Callable[[], float]] = {
            "constant": lambda: self.peak,
            "step": lambda: self.peak if self.duration_s / 3 <= t < 2 * self.duration_s / 3 else self.base,
            "ramp": lambda: self.base + (self.peak - self.base) * min(1.0, t / self.duration_s),
            "burst": lambda: self.peak if t % self.period_s < self.burst_s else self.base,
        }
        return rates[self.kind]()


def arrival_times(shape: LoadShape, max_requests: int, seed: int) -> list[float]:
    """Seconds from the start at which to send each request, bounded by the run's duration and count."""
    rng = random.Random(seed)
    times: list[float] = []
    t = 0.0
    while len(times) < max_requests:
        t += rng.expovariate(shape.peak)
        if t >= shape.duration_s:
            break
        if rng.random() < shape.rate(t) / shape.peak:
            times.append(t)
    return times
