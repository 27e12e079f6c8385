"""A short real load step against the tiny profile: the report files, and autoscaling that loses no request."""

import json
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def step_report(tiny_url, tmp_path_factory):
    """Step load (0.5 -> 3.5 -> 0.5 req/s, about the one replica's capacity) pinned to tiny-general, long enough for tiny-general to scale 1 -> 2 -> 1."""
    out = tmp_path_factory.mktemp("loadtest")
    cmd = [sys.executable, "-m", "cluster.loadtest", "--base-url", tiny_url, "--shape", "step", "--base", "0.5", "--peak", "3.5",
           "--duration", "240", "--max-requests", "400", "--max-tokens", "32", "--model", "tiny-general", "--tail", "50",
           "--out", str(out), "--quiet"]
    subprocess.run(cmd, check=True, timeout=600)
    return out, json.loads((out / "report.json").read_text())


def test_report_has_the_promised_files_and_fields(step_report):
    out, report = step_report
    assert (out / "report.png").stat().st_size > 10_000
    summary = report["summary"]
    for key in ("requests", "ok", "failed", "errors", "latency_s", "ttft_s", "throughput_req_per_s", "routing_mix", "autoscaling"):
        assert key in summary
    assert summary["requests"] > 100 and set(summary["latency_s"]) == {"p50", "p95", "p99"}
    assert report["windows"] and report["serve"] and {"latency_s", "ttft_s", "errors"} <= set(report["windows"][0])


def test_step_load_scales_up_and_back_down_without_losing_requests(step_report):
    _, report = step_report
    summary = report["summary"]
    assert summary["failed"] == 0, summary["errors"]
    scaling = summary["autoscaling"]["tiny-general"]
    assert scaling["initial_replicas"] == 1 and scaling["max_replicas_seen"] == 2, scaling
    assert scaling["scaled_back_down_s"] is not None, scaling
    assert summary["routing_mix"]["tiny-general"] >= summary["ok"] - 2  # Serve's counter may miss the last second
