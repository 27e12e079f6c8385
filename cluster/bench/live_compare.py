"""Live policy comparison on a running cluster: the router's quality+load policy against quality-only and the
quality-blind balancers, on the same arrivals.

    python -m cluster.bench.live_compare --rate 0.3 --duration 150 --slo-s 30 --out docs/benchmarks/live_compare

The live counterpart of `cluster.simulate`. Each policy gets the same open-loop Poisson arrivals of the same
mixed-role prompts (cluster/loadtest, same seed), one policy after another; before each run it waits until
every specialist is back at its minimum replica count, so each starts from the same state, and a short
unmeasured warm-up through `auto` runs first (the first requests after a start pay one-off costs). Policies:
  quality_load -- `model: auto` with the SLO as the request's `latency_budget_s` (the router's own policy);
  quality_only -- `model: auto` with `{"latency": 0, "cost": 0}`: the best predicted specialist, load ignored;
  pow2 / random -- quality-blind, pinned by the client (cluster/loadtest `--policy`).
Prints one JSON object (per policy: latency percentiles, SLO attainment with failures counted as misses, mean
predicted quality delivered, failures, who answered) and writes it, with each run's report, into --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
from pathlib import Path

from cluster.loadtest import run as loadtest
from cluster.serve_status import APPLICATIONS_PATH, replicas_by_deployment
from router.catalog import load_profile
from serve.cluster_metrics import deployment_name

POLICIES = {
    "quality_load": ("router", lambda slo_s: {"latency_budget_s": slo_s}),
    "quality_only": ("router", lambda slo_s: {"latency": 0, "cost": 0}),
    "pow2": ("pow2", lambda slo_s: None),
    "random": ("random", lambda slo_s: None),
}
SETTLE_TIMEOUT_S = 300


def wait_until_settled(dashboard_url: str, minimum: dict[str, int]) -> float:
    """Block until every specialist runs exactly its minimum replicas (the last run's scale-up has drained)."""
    start = time.monotonic()
    while time.monotonic() - start < SETTLE_TIMEOUT_S:
        with urllib.request.urlopen(f"{dashboard_url}{APPLICATIONS_PATH}", timeout=10) as response:
            replicas = replicas_by_deployment(json.load(response))
        counts = [replicas.get(deployment_name(name), {}) for name in minimum]
        if all(c.get("running") == c.get("total") == minimum[name] for c, name in zip(counts, minimum)):
            return time.monotonic() - start
        time.sleep(2)
    raise SystemExit(f"replicas did not settle to {minimum} within {SETTLE_TIMEOUT_S} s")


def summarise(report: dict, slo_s: float) -> dict:
    summary, requests = report["summary"], report["requests"]
    return {
        "p50_ms": round(summary["latency_s"]["p50"] * 1000) if summary["ok"] else None,
        "p95_ms": round(summary["latency_s"]["p95"] * 1000) if summary["ok"] else None,
        "p99_ms": round(summary["latency_s"]["p99"] * 1000) if summary["ok"] else None,
        "slo_attainment": round(sum(r["success"] and r["latency"] <= slo_s for r in requests) / len(requests), 4),
        "mean_predicted_quality": summary["mean_predicted_quality"],
        "requests": summary["requests"],
        "failed": summary["failed"],
        "answered_by": summary["answered_by"],
        "max_replicas_seen": {name: row["max_replicas_seen"] for name, row in summary["autoscaling"].items()},
    }


def loadtest_arguments(args: argparse.Namespace, duration: float, extra: list[str]) -> argparse.Namespace:
    return loadtest.parse_args([
        "--profile", args.profile, "--shape", "constant", "--base", str(args.rate), "--peak", str(args.rate),
        "--duration", str(duration), "--max-tokens", str(args.max_tokens), "--quiet", *extra,
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench.live_compare", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="local")
    parser.add_argument("--rate", type=float, default=0.3, help="requests/s, constant")
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of arrivals per policy")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--slo-s", type=float, default=30.0)
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated, run in this order")
    parser.add_argument("--warmup-s", type=float, default=20.0, help="unmeasured arrivals through `auto` before the first policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(".cache/live_compare"))
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    minimum = {s.name: s.deployment.autoscaling.min_replicas for s in profile.specialists}
    result: dict = {"workload": {k: v for k, v in vars(args).items() if k != "out"}}
    if args.warmup_s > 0:
        warmup = loadtest_arguments(args, args.warmup_s, ["--seed", str(args.seed + 1)])
        asyncio.run(loadtest.run(warmup))
    for name in args.policies.split(","):
        client_policy, knobs = POLICIES[name]
        router = ["--router", json.dumps(request_knobs)] if (request_knobs := knobs(args.slo_s)) else []
        loadtest_args = loadtest_arguments(args, args.duration, ["--seed", str(args.seed), "--policy", client_policy, *router])
        settled_s = wait_until_settled(loadtest_args.dashboard_url, minimum)
        print(f"{name}: settled in {settled_s:.0f} s; running {args.duration:.0f} s of arrivals", flush=True)
        report = asyncio.run(loadtest.run(loadtest_args))
        loadtest.write_report(report, args.out / name)
        result[name] = summarise(report, args.slo_s)
        print(f"{name}: {json.dumps(result[name])}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
