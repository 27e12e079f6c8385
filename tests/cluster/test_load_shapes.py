"""Arrival schedules of the load tests: bounded, reproducible, and shaped as named."""

import pytest

from cluster.loadtest.shapes import LoadShape, arrival_times


def test_arrivals_are_bounded_and_reproducible():
    shape = LoadShape("constant", base=0, peak=20, duration_s=10)
    times = arrival_times(shape, max_requests=1000, seed=3)
    assert times == arrival_times(shape, max_requests=1000, seed=3) != arrival_times(shape, max_requests=1000, seed=4)
    assert 150 < len(times) < 250 and all(0 <= t < 10 for t in times) and times == sorted(times)
    assert len(arrival_times(shape, max_requests=50, seed=3)) == 50


def test_step_load_is_heavy_only_in_its_middle_third():
    times = arrival_times(LoadShape("step", base=1, peak=20, duration_s=30), max_requests=10_000, seed=0)
    thirds = [sum(lo <= t < lo + 10 for t in times) for lo in (0, 10, 20)]
    assert thirds[1] > 5 * max(thirds[0], thirds[2])


def test_burst_and_ramp_rates():
    burst = LoadShape("burst", base=1, peak=10, duration_s=60, burst_s=5, period_s=20)
    assert [burst.rate(t) for t in (1, 6, 21, 26)] == [10, 1, 10, 1]
    ramp = LoadShape("ramp", base=0, peak=4, duration_s=100)
    assert ramp.rate(0) == 0 and ramp.rate(50) == 2 and ramp.rate(100) == 4


@pytest.mark.parametrize("kwargs", [{"kind": "wave"}, {"base": 5, "peak": 1}, {"peak": 0, "base": 0}, {"duration_s": 0}])
def test_bad_shapes_are_rejected(kwargs):
    with pytest.raises(ValueError):
        LoadShape(**{"kind": "step", "base": 1, "peak": 2, "duration_s": 10, **kwargs})
