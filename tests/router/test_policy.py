"""The `auto` policy: weights from requests, cost and latency terms, tie-breaking."""

import pytest

from router.policy import Load, Weights, normalised_costs, rank


def test_weights_from_request_overlays_defaults(tiny_profile):
    w = Weights.from_request({"cost": 0.5}, tiny_profile.router)
    assert w == Weights(quality=tiny_profile.router.quality, cost=0.5, latency=tiny_profile.router.latency)
    assert Weights.from_request(None, tiny_profile.router).cost == tiny_profile.router.cost


@pytest.mark.parametrize("raw", [{"speed": 1}, {"cost": -1}, {"cost": "high"}, {"cost": True}, [1], {"latency": float("inf")}])
def test_bad_weights_are_rejected_with_a_message(tiny_profile, raw):
    with pytest.raises(ValueError, match="router"):
        Weights.from_request(raw, tiny_profile.router)


def test_costs_are_normalised_by_the_most_expensive(tiny_profile):
    costs = normalised_costs(tiny_profile)
    assert max(costs.values()) == 1.0 and min(costs.values()) == pytest.approx(0.1)


def test_quality_wins_at_default_weights_and_cost_weight_flips_it(tiny_profile):
    quality = {"tiny-coder": 0.7, "tiny-general": 0.5}
    assert rank(tiny_profile, quality, Weights()).winner == "tiny-coder"
    assert rank(tiny_profile, quality, Weights(cost=1.0)).winner == "tiny-general"


def test_latency_weight_avoids_the_loaded_specialist(tiny_profile):
    quality = {"tiny-coder": 0.6, "tiny-general": 0.6}
    load = {"tiny-coder": Load(in_flight=0, ewma_latency_s=0.5), "tiny-general": Load(in_flight=9, queued=10, ewma_latency_s=0.5)}
    decision = rank(tiny_profile, quality, Weights(cost=0.0, latency=0.5), load)
    assert decision.winner == "tiny-coder"
    assert decision.trace["specialists"]["tiny-general"]["latency"] == 1.0


def test_ties_go_to_the_less_loaded(tiny_profile):
    quality = {"tiny-coder": 0.5, "tiny-general": 0.5}
    load = {"tiny-general": Load(in_flight=3)}
    decision = rank(tiny_profile, quality, Weights(cost=0.0, latency=0.0), load)
    assert decision.winner == "tiny-coder" and "tie" in decision.trace["reason"]
