"""A short real load step against the tiny profile: the report files, and autoscaling that loses no request."""

import json
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def step_report(tiny_url, tmp_path_factory):
    """Step load (0.25 -> 3.5 -> 0.25 req/s) pinned to tiny-general, long enough for it to scale 1 -> 2 -> 1. At the peak one
    replica keeps ~1.2 requests in flight (target 1: scale up), at the base ~0.1 (scale down; at a 0.5 req/s base a Poisson
    clump of 4 requests in 3.5 s on busy cores scaled it up 1.2 s before the step), and its queue absorbs the peak while
    the second replica starts."""
    out = tmp_path_factory.mktemp("loadtest")
    cmd = [sys.executable, "-m", "cluster.loadtest", "--base-url", tiny_url, "--shape", "step", "--base", "0.25", "--peak", "3.5",
           "--duration", "330", "--max-requests", "600", "--max-tokens", "32", "--profile", "tiny", "--model", "tiny-general", "--tail", "50",
           "--out", str(out), "--quiet"]
    subprocess.run(cmd, check=True, timeout=600)
    return out, json.loads((out / "report.json").read_text())


def test_report_has_the_promised_files_and_fields(step_report):
    out, report = step_report
    assert (out / "report.png").stat().st_size > 10_000
    summary = report["summary"]
    for key in ("requests", "ok", "failed", "errors", "latency_s", "ttft_s", "throughput_req_per_s", "routing_mix", "autoscaling",
                "answered_by", "mean_predicted_quality"):
        assert key in summary
    assert summary["answered_by"] == {"tiny-general": summary["ok"]}  # every answer's x-routed-model was recorded
    assert 0 <= summary["mean_predicted_quality"] <= 1
    assert summary["requests"] > 100 and set(summary["latency_s"]) == {"p50", "p95", "p99"}
    assert report["windows"] and report["serve"] and {"latency_s", "ttft_s", "errors"} <= set(report["windows"][0])


def test_step_load_scales_up_and_settles_back_without_losing_requests(step_report):
    """Every request is answered while Serve adds a replica and removes it again. (Whether the new replica
    finishes starting before the step ends depends on how busy the 2 cores are; the README reports when it did.)"""
    _, report = step_report
    summary = report["summary"]
    assert summary["failed"] == 0, summary["errors"]
    scaling = summary["autoscaling"]["tiny-general"]
    assert scaling["initial_replicas"] == 1 and scaling.get("decision_after_load_step_s") is not None, scaling
    assert 0 <= scaling["decision_after_load_step_s"] <= 30, scaling
    final = report["serve"][-1]["deployments"]["LLMServer:tiny-general"]
    assert final["target"] == 1 and final["running"] == 1, final
    assert summary["routing_mix"]["tiny-general"] >= summary["ok"] - 2  # Serve's counter may miss the last second
