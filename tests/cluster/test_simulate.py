"""The cluster simulator: reproducible per seed, the stable CLI contract, and each policy doing what it says."""

import argparse
import json
import random
import subprocess
import sys

import pytest

from cluster.simulate import POLICIES, SLOTS, Cluster, Request, bursty_trace, run
from router.catalog import load_profile
from router.policy import Weights

SMALL = ["--replicas", "8", "--requests", "300"]


def _args(seed: int) -> argparse.Namespace:
    return argparse.Namespace(profile="gpu", replicas=8, requests=300, seed=seed, utilisation=0.8, burst_factor=3.0, slo_s=30.0)


def test_same_seed_same_report_other_seed_other_report():
    assert run(_args(0)) == run(_args(0)) != run(_args(1))


def test_cli_prints_one_json_object_with_every_policy():
    out = subprocess.run([sys.executable, "-m", "cluster.simulate", *SMALL, "--seed", "0", "--json"], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    for policy in POLICIES:
        assert {"p50_ms", "p95_ms", "p99_ms", "slo_attainment", "mean_predicted_quality"} <= set(report[policy])


def test_trace_is_bursty_and_skewed_toward_code():
    from router import data

    trace = bursty_trace(load_profile("gpu"), data.load(), _args(0))
    assert sum(r.domain == "code" for r in trace) / len(trace) > 0.45
    gaps = [b.at - a.at for a, b in zip(trace, trace[1:])]
    mean = sum(gaps) / len(gaps)
    assert (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5 > 1.1 * mean  # burstier than Poisson (CV 1)


@pytest.fixture
def cluster():
    return Cluster(load_profile("gpu"), replicas=8, rng=random.Random(0))


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
    idle = Cluster(cluster.profile, replicas=8, rng=random.Random(0))
    assert idle.choose("quality_load", request, Weights()).specialist == coder
