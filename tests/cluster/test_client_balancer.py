"""The load test's quality-blind client-side baselines keep honest in-flight counts."""

import pytest

from cluster.loadtest.run import ClientBalancer


def test_pow2_avoids_the_busier_specialist_and_releases_its_count_however_the_request_ends():
    balancer = ClientBalancer("pow2", ["a", "b"], seed=0)
    with balancer.request() as first:
        assert balancer.in_flight[first] == 1
        with balancer.request() as second:
            assert second != first  # with two specialists pow2 compares both and takes the idle one
    with pytest.raises(RuntimeError), balancer.request():
        raise RuntimeError("the client failed mid-request")
    assert balancer.in_flight == {"a": 0, "b": 0}
