"""Ensembles in the simulator: each mode makes the calls it says, in sequential stages, priced against single and moa."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from cluster.simulate.ensemble import REFERENCE_TOKENS, Planner, price, simulate_stages, split_by_work
from cluster.simulate.simulator import Request, bursty_trace
from router.catalog import load_profile

PROFILE = load_profile("gpu")
K = PROFILE.ensemble.proposers
S = len(PROFILE.names)
CLOSE = dict(zip(PROFILE.names, (0.9, 0.85, 0.8, 0.75)))  # every specialist within score_gap of the best


def _trace(n: int = 40, gap_s: float = 0.5, quality: dict[str, float] = CLOSE) -> list[Request]:
    return [Request(at=i * gap_s, domain="code", prompt_tokens=100, output_tokens=300, quality=quality) for i in range(n)]


def _args(modes: list[str], early_stop_rate: float = 0.5, requests: int = 40) -> argparse.Namespace:
    return argparse.Namespace(replicas=8, seed=0, provision="demand", early_stop_rate=early_stop_rate, ensemble=modes,
                              ensemble_requests=requests)


def _with_layers(layers: int):
    return PROFILE.model_copy(update={"ensemble": PROFILE.ensemble.model_copy(update={"layers": layers})})


@pytest.mark.parametrize(("mode", "early_stop_rate", "calls"), [
    ("routemoa", 1.0, K), ("routemoa", 0.0, K + K * (K - 1) + 1), ("moa", 0.5, S + 1), ("self_moa", 0.5, K + 1),
    ("vote", 0.5, K), ("best_of_n", 0.5, 2 * K), ("refine", 0.5, 3),
])
def test_each_mode_makes_the_calls_it_says_per_request(mode, early_stop_rate, calls):
    assert K == 3  # the gpu profile's default, which the counts above assume for routemoa's cap of 3
    report = price(PROFILE, _trace(), _args([mode], early_stop_rate))
    assert report["modes"][mode]["calls_per_request"] == calls
    assert report["modes"]["single"]["calls_per_request"] == 1


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_moa_calls_every_specialist_in_every_layer_then_the_aggregator(layers):
    profile = _with_layers(layers)
    stages = Planner(profile, 0.5, seed=0).stages("moa", _trace(1)[0])
    assert sum(len(stage) for stage in stages) == S * layers + 1
    assert [len(stage) for stage in stages] == [S] * layers + [1]


def test_routemoa_screens_out_specialists_far_below_the_best():
    far = dict(zip(PROFILE.names, (0.9, 0.85, 0.5, 0.4)))
    [proposals] = Planner(PROFILE, 1.0, seed=0).stages("routemoa", _trace(1, quality=far)[0])
    assert [call.specialist for call in proposals] == PROFILE.names[:2]


def test_a_lone_screened_proposer_answers_without_verdicts_or_aggregation():
    lone = dict(zip(PROFILE.names, (0.9, 0.5, 0.4, 0.3)))
    [proposals] = Planner(PROFILE, 0.0, seed=0).stages("routemoa", _trace(1, quality=lone)[0])  # never stops early
    assert [call.specialist for call in proposals] == PROFILE.names[:1]


def test_judges_are_short_and_the_aggregator_reads_the_question_and_every_reference():
    request = _trace(1)[0]
    answers, verdicts = Planner(PROFILE, 0.5, seed=0).stages("best_of_n", request)
    assert all(v.output_tokens == 1 and v.prompt_tokens == request.prompt_tokens + min(a.output_tokens, REFERENCE_TOKENS)
               for v, a in zip(verdicts, answers))
    proposals, [aggregator] = Planner(PROFILE, 0.5, seed=0).stages("moa", request)
    assert aggregator.prompt_tokens == request.prompt_tokens + sum(min(a.output_tokens, REFERENCE_TOKENS) for a in proposals)
    assert aggregator.output_tokens == request.output_tokens  # the final answer is as long as single's, uncapped
    assert all(a.output_tokens <= PROFILE.ensemble.proposer_max_tokens for a in proposals)


@pytest.mark.parametrize("early_stop_rate", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_moa_costs_more_tokens_than_routemoa_at_any_early_stop_rate_on_the_gpu_trace(early_stop_rate):
    from router.training import data

    trace_args = dict(replicas=8, requests=300, seed=0, utilisation=0.65, burst_factor=4.0, burst_domain="biomedical")
    trace = bursty_trace(PROFILE, data.load(), argparse.Namespace(**trace_args))
    modes = price(PROFILE, trace, _args(["routemoa"], early_stop_rate, requests=300))["modes"]
    assert modes["moa"]["tokens_per_request"] > modes["routemoa"]["tokens_per_request"]
    assert modes["moa"]["gpu_s_per_request"] > modes["routemoa"]["gpu_s_per_request"]


@pytest.mark.parametrize("mode", ["moa", "routemoa", "refine", "best_of_n"])
def test_a_stage_starts_only_when_the_previous_one_finished_even_on_a_busy_cluster(mode):
    profile = _with_layers(2)
    trace = _trace(200, gap_s=0.05)  # far more work than 4 replicas drain: calls queue
    planner = Planner(profile, 0.0, seed=0)
    plans = [planner.stages(mode, request) for request in trace]
    records = simulate_stages(profile, trace, plans, dict.fromkeys(profile.names, 1), seed=0)
    queued = 0
    for request, stages, calls in zip(trace, plans, records):
        assert len(calls) == sum(len(stage) for stage in stages)
        finished = {}
        for stage, _, dispatched, started, done in calls:
            assert request.at <= dispatched <= started < done
            assert dispatched >= finished.get(stage - 1, request.at)  # e.g. an aggregator after its last proposer
            finished[stage] = max(finished.get(stage, 0.0), done)
            queued += started > dispatched
    assert queued  # the check ran with queues, not only on idle replicas


def test_every_mode_gets_replicas_in_proportion_to_its_work():
    split = split_by_work({"a": 10.0, "b": 30.0, "c": 0.0}, 10)
    assert split == {"a": 3, "b": 6, "c": 1}
    modes = price(PROFILE, _trace(), _args(["vote"]))["modes"]
    ratio = modes["moa"]["gpu_s_per_request"] / modes["single"]["gpu_s_per_request"]
    assert modes["moa"]["replicas"] == pytest.approx(8 * ratio, abs=1)


def test_cli_prices_the_asked_modes_with_single_and_moa_under_ensembles():
    command = ["--replicas", "8", "--requests", "200", "--ensemble", "vote,refine", "--json"]
    out = subprocess.run([sys.executable, "-m", "cluster.simulate", *command], capture_output=True, text=True, check=True)
    ensembles = json.loads(out.stdout)["ensembles"]
    assert list(ensembles["modes"]) == ["single", "moa", "vote", "refine"]
    assert ensembles["modes"]["vote"]["over_single"]["calls_per_request"] == K
    assert ensembles["modes"]["moa"]["over_moa"] == dict.fromkeys(ensembles["modes"]["moa"]["over_moa"], 1.0)


def test_cli_rejects_an_unknown_mode_naming_the_valid_ones():
    out = subprocess.run([sys.executable, "-m", "cluster.simulate", "--ensemble", "moa,bogus"], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "unknown ensemble mode(s) ['bogus']" in out.stderr and "routemoa" in out.stderr


def test_on_an_idle_cluster_a_request_takes_the_sum_of_its_stages_slowest_calls():
    modes = price(PROFILE, _trace(1), _args(list(PROFILE.ensemble.modes), 0.0, requests=1))["modes"]
    assert all(row["p95_ms"] == row["p95_unloaded_ms"] for row in modes.values())
    assert modes["moa"]["p95_ms"] > modes["single"]["p95_ms"]
