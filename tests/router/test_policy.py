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
    load = {"tiny-coder": Load(in_flight=0, ewma_latency_s=0.5), "tiny-general": Load(in_flight=19, ewma_latency_s=0.5)}
    decision = rank(tiny_profile, quality, Weights(cost=0.0, latency=0.5), load)
    assert decision.winner == "tiny-coder"
    assert decision.trace["specialists"]["tiny-general"]["expected_latency_s"] == pytest.approx(10.0)


def test_expected_latency_counts_replicas_and_batch_slots():
    assert Load(in_flight=3, replicas=1, slots_per_replica=4, ewma_latency_s=2.0).expected_latency_s() == 2.0  # a free slot
    assert Load(in_flight=7, replicas=1, slots_per_replica=4, ewma_latency_s=2.0).expected_latency_s() == 4.0  # queues
    assert Load(in_flight=7, replicas=2, slots_per_replica=4, ewma_latency_s=2.0).expected_latency_s() == 2.0  # scaled out
    assert Load(in_flight=1, serve_ongoing=4, serve_queued=3, ewma_latency_s=1.0).pending == 7  # other routers' load


def test_requests_stuck_in_flight_raise_the_expected_latency_before_they_finish(tiny_profile):
    """The EWMA learns only from finished requests; requests in flight for 40 s on average say it is that slow now."""
    assert Load(in_flight=1, slots_per_replica=4, ewma_latency_s=2.0, in_flight_age_s=40.0).expected_latency_s() == 40.0
    assert Load(in_flight=1, slots_per_replica=4, ewma_latency_s=2.0, in_flight_age_s=0.5).expected_latency_s() == 2.0
    quality = {"tiny-coder": 0.9, "tiny-general": 0.6}
    load = {"tiny-coder": Load(in_flight=1, ewma_latency_s=2.0, in_flight_age_s=40.0), "tiny-general": Load(ewma_latency_s=2.0)}
    decision = rank(tiny_profile, quality, Weights(cost=0.0, latency_budget_s=30.0), load)
    assert decision.winner == "tiny-general"
    assert decision.trace["specialists"]["tiny-coder"]["load"]["in_flight_age_s"] == 40.0


def test_before_any_answer_a_budget_goes_to_the_specialist_whose_catalog_speed_meets_it(tiny_profile):
    quality = {"tiny-coder": 0.9, "tiny-general": 0.6}
    load = {"tiny-coder": Load(unmeasured_service_s=40.0), "tiny-general": Load(unmeasured_service_s=5.0)}
    decision = rank(tiny_profile, quality, Weights(cost=0.0, latency_budget_s=30.0), load)
    assert decision.winner == "tiny-general"
    assert decision.trace["specialists"]["tiny-coder"]["expected_latency_s"] == 40.0
    measured = {**load, "tiny-coder": Load(ewma_latency_s=10.0, unmeasured_service_s=40.0)}  # a measurement wins
    assert rank(tiny_profile, quality, Weights(cost=0.0, latency_budget_s=30.0), measured).winner == "tiny-coder"


def test_a_growing_queue_eventually_outweighs_a_quality_lead(tiny_profile):
    quality = {"tiny-coder": 0.9, "tiny-general": 0.6}
    for backlog, winner in ((0, "tiny-coder"), (40, "tiny-coder"), (400, "tiny-general")):
        load = {"tiny-coder": Load(in_flight=backlog, slots_per_replica=4, ewma_latency_s=1.0)}
        assert rank(tiny_profile, quality, Weights(cost=0.0), load).winner == winner, backlog


def test_latency_budget_prefers_the_best_model_expected_to_meet_it(tiny_profile):
    quality = {"tiny-coder": 0.9, "tiny-general": 0.6}
    load = {"tiny-coder": Load(in_flight=8, ewma_latency_s=1.0), "tiny-general": Load(ewma_latency_s=1.0)}
    assert rank(tiny_profile, quality, Weights(cost=0.0), load).winner == "tiny-coder"
    decision = rank(tiny_profile, quality, Weights(cost=0.0, latency_budget_s=3.0), load)
    assert decision.winner == "tiny-general" and "within 3 s" in decision.trace["reason"]
    assert decision.trace["specialists"]["tiny-coder"]["meets_budget"] is False
    impossible = rank(tiny_profile, quality, Weights(cost=0.0, latency_budget_s=0.1), load)
    assert impossible.winner == "tiny-coder" and "none expected within" in impossible.trace["reason"]


def test_signals_that_fell_back_to_defaults_show_in_the_trace(tiny_profile):
    load = {"tiny-coder": Load(defaults=("ewma_latency_s: no sample yet",))}
    trace = rank(tiny_profile, {"tiny-coder": 0.5, "tiny-general": 0.5}, Weights(), load).trace
    assert trace["specialists"]["tiny-coder"]["load"]["defaults"] == ["ewma_latency_s: no sample yet"]


def test_budget_must_be_positive(tiny_profile):
    assert Weights.from_request({"latency_budget_s": 2}, tiny_profile.router).latency_budget_s == 2.0
    with pytest.raises(ValueError, match="latency_budget_s"):
        Weights.from_request({"latency_budget_s": 0}, tiny_profile.router)


def test_ties_go_to_the_less_loaded(tiny_profile):
    quality = {"tiny-coder": 0.5, "tiny-general": 0.5}
    load = {"tiny-general": Load(in_flight=3)}
    decision = rank(tiny_profile, quality, Weights(cost=0.0, latency=0.0), load)
    assert decision.winner == "tiny-coder" and "tie" in decision.trace["reason"]
