"""Discrete-event simulator of a large cluster, driven by the router's own policy code (`router.policy.rank`).

    python -m cluster.simulate --replicas 64 --seed 0 --json

Every policy sees the same trace: bursty open-loop arrivals (a two-state Markov-modulated Poisson process)
of real prompts from the router's dataset, skewed toward code, each with the trained scorer's predicted
quality for every specialist of the profile. Replicas are split evenly across the specialists (a cluster
sized for an even mix, which the skew then overloads on one side). Policies:
  random / round_robin / pow2 — quality-blind balancers over all replicas (pow2: the shorter of two queues);
  quality_only — the specialist with the highest predicted quality, pow2 among its replicas (Ray Serve's
                 default inside a deployment);
  quality_load — `rank` with the live load each specialist would report (in flight, replicas, batch slots,
                 EWMA latency), then pow2 among the winner's replicas.
Service model (assumptions, printed in the report): each replica runs `slots` sequences at once at a fixed
per-sequence decode rate of its specialist, after a prefill at a fixed rate; output lengths are lognormal
around a per-domain median; excess requests wait in the replica's FIFO queue.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import random
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from router.catalog import Profile, default_cache_dir, load_profile
from router.policy import Load, Weights, rank

POLICIES = ("random", "round_robin", "pow2", "quality_only", "quality_load")
SLOTS = 8  # sequences a replica decodes at once at about its single-stream rate (assumed)
DECODE_TOK_S = 30.0  # per sequence, a 7-9B model on an L4-class GPU (assumed, not measured here)
PREFILL_TOK_S = 2000.0
OUTPUT_MEDIAN = {"code": 300, "math": 250, "biomedical": 200, "general": 250}
SKEWED_MIX = {"code": 0.55, "math": 0.15, "biomedical": 0.15, "general": 0.15}
EWMA_ALPHA = 0.2  # as serve/load.py


@dataclass
class Request:
    at: float
    domain: str
    prompt_tokens: int
    output_tokens: int
    quality: dict[str, float]


@dataclass
class Replica:
    specialist: str
    running: int = 0
    queue: deque = field(default_factory=deque)

    @property
    def pending(self) -> int:
        return self.running + len(self.queue)


def service_s(request: Request) -> float:
    return request.prompt_tokens / PREFILL_TOK_S + request.output_tokens / DECODE_TOK_S


def predicted_quality(profile: Profile, prompts: list[str], cache: Path) -> list[dict[str, float]]:
    """The trained scorer's quality per specialist for each prompt, cached: scoring is the slow part."""
    key = hashlib.sha256(json.dumps([profile.names, prompts]).encode()).hexdigest()[:16]
    path = cache / "simulate" / f"quality-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    from router.routing import Router

    router = Router.from_profile(profile)
    rows = []
    for start in range(0, len(prompts), 64):
        roles, models = router.predict(prompts[start : start + 64])
        rows += [router.specialist_quality(r, m) for r, m in zip(roles, models)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return rows


def bursty_trace(profile: Profile, items: list[dict], args: argparse.Namespace) -> list[Request]:
    """Arrivals at `utilisation` of the cluster's capacity on average, `burst_factor` x that during bursts."""
    rng = random.Random(args.seed)
    by_domain: dict[str, list[dict]] = {}
    for item in items:
        by_domain.setdefault(item["domain"], []).append(item)
    domains = list(SKEWED_MIX)
    picked = [rng.choice(by_domain[d]) for d in rng.choices(domains, [SKEWED_MIX[d] for d in domains], k=args.requests)]
    quality = predicted_quality(profile, [p["prompt"] for p in picked], default_cache_dir())
    mean_service = sum(OUTPUT_MEDIAN[d] * SKEWED_MIX[d] for d in domains) / DECODE_TOK_S
    mean_rate = args.utilisation * args.replicas * SLOTS / mean_service
    burst_share = 0.2  # of the time; the calm rate makes the long-run mean come out at mean_rate
    calm_rate = mean_rate * (1 - burst_share * args.burst_factor) / (1 - burst_share)
    if calm_rate <= 0:
        raise SystemExit("--burst-factor too large for a 20 % burst share: the calm rate would be <= 0")
    t, bursting, state_ends, requests = 0.0, False, rng.expovariate(1 / 30), []
    for item, q in zip(picked, quality):
        while True:
            gap = rng.expovariate(mean_rate * args.burst_factor if bursting else calm_rate)
            if t + gap < state_ends:
                t += gap
                break
            t, bursting = state_ends, not bursting
            state_ends = t + rng.expovariate(1 / (30 * burst_share / (1 - burst_share) if bursting else 30))
        tokens = max(1, round(rng.lognormvariate(math.log(OUTPUT_MEDIAN[item["domain"]]), 0.5)))
        requests.append(Request(t, item["domain"], min(2000, len(item["prompt"]) // 4 + 1), tokens, q))
    return requests


class Cluster:
    """Replicas, their queues, and what each specialist's router-side load looks like at any moment."""

    def __init__(self, profile: Profile, replicas: int, rng: random.Random) -> None:
        names = profile.names
        self.profile, self.rng = profile, rng
        self.replicas = [Replica(names[i % len(names)]) for i in range(replicas)]
        self.pools = {n: [r for r in self.replicas if r.specialist == n] for n in names}
        self.ewma: dict[str, float | None] = dict.fromkeys(names)
        self.next_rr = 0

    def pow2(self, pool: list[Replica]) -> Replica:
        a, b = self.rng.sample(pool, 2) if len(pool) > 1 else (pool[0], pool[0])
        return a if a.pending <= b.pending else b

    def load(self) -> dict[str, Load]:
        return {
            name: Load(in_flight=sum(r.pending for r in pool), replicas=len(pool), slots_per_replica=SLOTS, ewma_latency_s=self.ewma[name])
            for name, pool in self.pools.items()
        }

    def choose(self, policy: str, request: Request, weights: Weights) -> Replica:
        if policy == "random":
            return self.rng.choice(self.replicas)
        if policy == "round_robin":
            self.next_rr = (self.next_rr + 1) % len(self.replicas)
            return self.replicas[self.next_rr]
        if policy == "pow2":
            return self.pow2(self.replicas)
        if policy == "quality_only":
            return self.pow2(self.pools[max(request.quality, key=request.quality.get)])
        return self.pow2(self.pools[rank(self.profile, request.quality, weights, self.load()).winner])

    def finished(self, replica: Replica, latency_s: float) -> None:
        previous = self.ewma[replica.specialist]
        self.ewma[replica.specialist] = latency_s if previous is None else (1 - EWMA_ALPHA) * previous + EWMA_ALPHA * latency_s


def simulate(profile: Profile, trace: list[Request], policy: str, args: argparse.Namespace) -> dict:
    """Run one policy over the trace; latency = queueing + service, per request."""
    cluster = Cluster(profile, args.replicas, random.Random(args.seed))
    weights = Weights.from_request(None, profile.router)
    events: list[tuple[float, int, int, Replica, Request]] = []  # (time, kind 0=finish/1=arrival, seq, replica, request)
    for i, request in enumerate(trace):
        heapq.heappush(events, (request.at, 1, i, None, request))
    latencies, quality, served, seq = [], [], {n: 0 for n in profile.names}, len(trace)

    def start(replica: Replica, request: Request, now: float) -> None:
        nonlocal seq
        replica.running += 1
        seq += 1
        heapq.heappush(events, (now + service_s(request), 0, seq, replica, request))

    while events:
        now, kind, _, replica, request = heapq.heappop(events)
        if kind == 1:
            replica = cluster.choose(policy, request, weights)
            served[replica.specialist] += 1
            quality.append(request.quality[replica.specialist])
            if replica.running < SLOTS:
                start(replica, request, now)
            else:
                replica.queue.append(request)
            continue
        replica.running -= 1
        latencies.append(now - request.at)
        cluster.finished(replica, now - request.at)
        if replica.queue:
            start(replica, replica.queue.popleft(), now)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {
        "p50_ms": round(float(p50) * 1000),
        "p95_ms": round(float(p95) * 1000),
        "p99_ms": round(float(p99) * 1000),
        "slo_attainment": round(sum(lat <= args.slo_s for lat in latencies) / len(latencies), 4),
        "mean_predicted_quality": round(sum(quality) / len(quality), 4),
        "routing_mix": {n: round(c / len(trace), 3) for n, c in served.items()},
    }


def run(args: argparse.Namespace) -> dict:
    from router import data

    profile = load_profile(args.profile)
    trace = bursty_trace(profile, data.load(), args)
    report = {policy: simulate(profile, trace, policy, args) for policy in POLICIES}
    ours, pow2, quality_only = report["quality_load"], report["pow2"], report["quality_only"]
    report["comparison"] = {
        "quality_load_p95_over_pow2_p95": round(ours["p95_ms"] / pow2["p95_ms"], 3),
        "quality_load_p95_over_quality_only_p95": round(ours["p95_ms"] / quality_only["p95_ms"], 3),
        "quality_load_quality_vs_quality_only": round(ours["mean_predicted_quality"] / quality_only["mean_predicted_quality"] - 1, 4),
    }
    report["workload"] = {
        "profile": args.profile, "replicas": args.replicas, "requests": len(trace), "seed": args.seed, "mix": SKEWED_MIX,
        "utilisation": args.utilisation, "burst_factor": args.burst_factor, "slo_s": args.slo_s, "slots_per_replica": SLOTS,
        "decode_tok_s_per_sequence": DECODE_TOK_S, "prefill_tok_s": PREFILL_TOK_S, "output_median_tokens": OUTPUT_MEDIAN,
        "duration_s": round(trace[-1].at, 1),
    }
    return report


def write_plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (latency, quality) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(len(POLICIES))
    for offset, key in zip((-0.25, 0, 0.25), ("p50_ms", "p95_ms", "p99_ms")):
        latency.bar(x + offset, [report[p][key] / 1000 for p in POLICIES], 0.25, label=key[:3])
    latency.set(xticks=x, xticklabels=POLICIES, ylabel="s", yscale="log", title=f"latency, {report['workload']['replicas']} replicas")
    latency.legend()
    quality.bar(x, [report[p]["mean_predicted_quality"] for p in POLICIES])
    quality.set(xticks=x, xticklabels=POLICIES, title="mean predicted quality delivered")
    for axis in (latency, quality):
        axis.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--utilisation", type=float, default=0.8, help="mean offered load / cluster capacity")
    parser.add_argument("--burst-factor", type=float, default=3.0, help="rate during bursts / mean rate")
    parser.add_argument("--slo-s", type=float, default=30.0, help="a request meets the SLO if it finishes within this")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    parser.add_argument("--plot", type=Path, help="write a PNG of latency percentiles and quality per policy")
    args = parser.parse_args(argv)
    if args.replicas < len(load_profile(args.profile).names):
        parser.error("need at least one replica per specialist")
    report = run(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        write_plot(report, args.plot)
    if args.json:
        print(json.dumps(report))
        return
    for policy in POLICIES:
        r = report[policy]
        print(f"{policy:13} p50 {r['p50_ms'] / 1000:7.1f} s  p95 {r['p95_ms'] / 1000:7.1f} s  p99 {r['p99_ms'] / 1000:7.1f} s  "
              f"SLO {r['slo_attainment']:.3f}  quality {r['mean_predicted_quality']:.3f}")
    print(json.dumps(report["comparison"]))


if __name__ == "__main__":
    main()
