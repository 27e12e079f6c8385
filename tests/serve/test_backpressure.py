"""A router replica's own bound: refusals past it are fast 503s with Retry-After, and a request never settled ages out."""

import pytest

from serve import backpressure
from serve.backpressure import ReplicaBound
from serve.errors import APIError


def test_past_the_bound_a_request_is_refused_with_a_retryable_503_until_one_leaves():
    bound = ReplicaBound(2, horizon_s=60)
    bound.enter("a")
    bound.enter("b")
    with pytest.raises(APIError) as refused:
        bound.enter("c")
    assert (refused.value.status, refused.value.code) == (503, "overloaded") and refused.value.retry_after
    bound.leave("a")
    bound.enter("c")
    assert len(bound) == 2


def test_a_request_never_settled_ages_out_after_the_horizon(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(backpressure.time, "monotonic", lambda: now[0])
    bound = ReplicaBound(1, horizon_s=70)
    bound.enter("leaked")  # its client left before its stream began: no leave() ever comes
    now[0] += 71
    bound.enter("next")
    assert len(bound) == 1
