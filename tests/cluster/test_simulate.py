"""The cluster simulator: reproducible per seed, the stable CLI contract, and each policy doing what it says."""

import argparse
import json
import random
import subprocess
import sys

import pytest

from cluster.simulate.simulator import (
    POLICIES, PREFILL_TOK_S, SLOTS, Cluster, Request, bursty_trace, p95_floor_s, replica_split, run, service_s, simulate,
)
from router.catalog import load_profile
from router.policy import Weights

SMALL = ["--replicas", "8", "--requests", "300"]


def _args(seed: int) -> argparse.Namespace:
    return argparse.Namespace(
        profile="gpu", replicas=8, requests=300, seed=seed, utilisation=0.65, burst_factor=4.0, burst_domain="biomedical",
        provision="demand", slo_s=30.0, floor_quality_loss=0.02,
    )


def test_same_seed_same_report_other_seed_other_report():
    assert run(_args(0)) == run(_args(0)) != run(_args(1))


def test_cli_prints_one_json_object_with_every_policy():
    out = subprocess.run([sys.executable, "-m", "cluster.simulate", *SMALL, "--seed", "0", "--json"], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    for policy in POLICIES:
        assert {"p50_ms", "p95_ms", "p99_ms", "slo_attainment", "mean_predicted_quality"} <= set(report[policy])


def test_trace_is_skewed_toward_code_with_surges_of_the_hot_domain():
    from router.training import data

    args = _args(0)
    args.requests = 2000
    trace = bursty_trace(load_profile("gpu"), data.load(), args)
    assert sum(r.domain == "code" for r in trace) / len(trace) > 0.4
    window = 20.0  # s; bursts last 40 s on average
    counts = [0] * (int(trace[-1].at // window) + 1)
    for request in trace:
        counts[int(request.at // window)] += request.domain == "biomedical"
    assert max(counts) > 2 * sum(counts) / len(counts)  # the hot domain surges well above its mean rate


def test_demand_provisioning_follows_quality_routed_work_and_keeps_every_specialist():
    from router.training import data

    profile = load_profile("gpu")
    trace = bursty_trace(profile, data.load(), _args(0))
    demand = replica_split(profile, trace, 16, "demand")
    assert sum(demand.values()) == 16 and min(demand.values()) >= 1
    assert max(demand, key=demand.get) == "qwen2.5-coder-7b"  # the skew toward code gets the most replicas
    assert replica_split(profile, trace, 16, "even") == dict.fromkeys(profile.names, 4)


EIGHT = {"qwen2.5-coder-7b": 2, "qwen2.5-math-7b": 2, "openbiollm-8b": 2, "gemma-2-9b": 2}


@pytest.fixture
def cluster():
    return Cluster(load_profile("gpu"), EIGHT, rng=random.Random(0))


def _request(best: str, cluster: Cluster) -> Request:
    quality = {name: (0.9 if name == best else 0.8) for name in cluster.profile.names}
    return Request(at=0.0, domain="code", prompt_tokens=10, output_tokens=10, quality=quality)


def test_pow2_never_picks_the_longer_of_its_two_queues(cluster):
    for i, replica in enumerate(cluster.replicas):
        replica.running = i
    picks = [cluster.pow2(cluster.replicas).running for _ in range(200)]
    assert max(picks) < len(cluster.replicas) - 1  # the longest queue can never win a pair


def test_quality_only_ignores_load_and_quality_load_leaves_a_saturated_specialist(cluster):
    coder = cluster.profile.names[0]
    for replica in cluster.pools[coder]:
        replica.running = SLOTS
        replica.queue.extend([None] * 200)  # a long backlog
    request = _request(coder, cluster)
    assert cluster.choose("quality_only", request, Weights()).specialist == coder
    assert cluster.choose("quality_load", request, Weights()).specialist != coder
    idle = Cluster(cluster.profile, EIGHT, rng=random.Random(0))
    assert idle.choose("quality_load", request, Weights()).specialist == coder


@pytest.mark.parametrize("best", ["qwen2.5-coder-7b", "openbiollm-8b"])
def test_a_replica_decodes_at_its_specialists_catalog_speed(cluster, best):
    request = _request(best, cluster)
    report = simulate(cluster.profile, [request], EIGHT, "quality_only", seed=0, slo_s=30.0)
    decode_tok_s = cluster.profile.specialist(best).decode_tok_s
    expected_s = request.prompt_tokens / PREFILL_TOK_S + request.output_tokens / decode_tok_s
    assert report["p50_ms"] == round(expected_s * 1000)


def test_a_profile_without_decode_speeds_is_refused_naming_the_specialists():
    out = subprocess.run([sys.executable, "-m", "cluster.simulate", "--profile", "tiny", *SMALL], capture_output=True, text=True)
    assert out.returncode == 2 and "decode_tok_s" in out.stderr and "Traceback" not in out.stderr
    assert all(name in out.stderr for name in load_profile("tiny").names)


def test_the_p95_floor_moves_requests_to_a_faster_specialist_only_as_far_as_the_quality_budget_stretches():
    rates = {"slow": 10.0, "fast": 100.0}
    quality = {"slow": 0.9, "fast": 0.8}
    trace = [Request(at=i, domain="math", prompt_tokens=10, output_tokens=100, quality=quality) for i in range(20)]
    slow_s, fast_s = service_s(trace[0], rates["slow"]), service_s(trace[0], rates["fast"])
    assert p95_floor_s(trace, rates, quality_loss=0.02) == slow_s  # 19 moves needed (1 of 20 may be slow), 3 affordable
    assert p95_floor_s(trace, rates, quality_loss=0.12) == fast_s  # 19 moves x 0.1 fit in 0.12 x 20 x 0.9


def test_quality_only_never_beats_the_p95_floor():
    report = run(_args(0))
    assert report["p95_floor"]["p95_ms"] <= report["quality_only"]["p95_ms"]
