"""Discrete-event simulator of a large cluster, driven by the router's own policy code (`router.policy.rank`).

    python -m cluster.simulate --replicas 64 --seed 0 --json

Every policy sees the same trace: open-loop arrivals of real prompts from the router's dataset, skewed toward
code, each with the trained scorer's predicted quality for every specialist of the profile.

Default workload, a hot spot: replicas are split across the specialists in proportion to the long-run work
each would get under quality routing (where an autoscaler settles), and then one tenant's traffic (biomedical
by default) surges to `burst_factor` x its calm rate for 20 % of the time, in bursts of 40 s on average (a
two-state Markov-modulated Poisson process) -- faster than an autoscaler adds GPU replicas, while the cluster
as a whole still has room. That is the regime routing can help in. `--provision even --burst-domain all`
gives the other regime: a cluster sized for an even mix, hit by bursts of everything; when the whole cluster
is overloaded, no routing policy saves the tail.
Policies:
  random / round_robin / pow2 -- quality-blind balancers over all replicas (pow2: the shorter of two queues);
  quality_only -- the specialist with the highest predicted quality, pow2 among its replicas (Ray Serve's
                  default inside a deployment);
  quality_load -- `rank` with the live load each specialist would report (in flight and their mean age,
                  replicas, batch slots, EWMA latency, or its catalog speed before the first answer) and the SLO
                  as the request's latency budget, then pow2 among the winner's replicas.
Service model (printed in the report): each replica runs `slots` sequences at once, each at its specialist's
`decode_tok_s` from models.yaml (measured on `local`, estimated from weight bytes on `gpu`), after a prefill at
a fixed rate; output lengths are lognormal around a per-domain median; excess requests wait in the replica's
FIFO queue. Different speeds are what lets a policy beat a pooled quality-blind balancer: sending a prompt to
a faster specialist that is good enough at it.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cluster.loadtest.scored_prompts import predicted_quality
from router.catalog import CatalogError, Profile, default_cache_dir, load_profile
from router.training.data import DOMAIN_ROLE
from router.policy import Load, Weights, mean_age_s, rank, unmeasured_service_s

POLICIES = ("random", "round_robin", "pow2", "quality_only", "quality_load")
SLOTS = 8  # sequences a replica decodes at once, each at its specialist's `decode_tok_s` (a batch-8 rate)
PREFILL_TOK_S = 2000.0
OUTPUT_MEDIAN = {"code": 300, "math": 250, "biomedical": 200, "general": 250}
SKEWED_MIX = {"code": 0.55, "math": 0.15, "biomedical": 0.15, "general": 0.15}
OUTPUT_SIGMA = 0.5  # of log output length
EWMA_ALPHA = 0.2  # as serve/load.py
BURST_SHARE = 0.2  # of the time spent in bursts
CALM_MEAN_S = 160.0  # mean length of a calm period; bursts last CALM_MEAN_S * BURST_SHARE / (1 - BURST_SHARE)


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


def decode_rates(profile: Profile) -> dict[str, float]:
    """Each specialist's per-sequence decode rate; the simulator has no speed to assume for one without it."""
    missing = [s.name for s in profile.specialists if s.decode_tok_s is None]
    if missing:
        raise CatalogError(f"models.yaml: {missing} need `decode_tok_s` (tokens/s per sequence at batch 8) to be simulated")
    return {s.name: s.decode_tok_s for s in profile.specialists}


def service_s(request: Request, decode_tok_s: float) -> float:
    return request.prompt_tokens / PREFILL_TOK_S + request.output_tokens / decode_tok_s


def mean_service_s(domain: str, decode_tok_s: float) -> float:
    """Expected decode time of one request of a domain (lognormal output length, prefill is negligible here)."""
    return OUTPUT_MEDIAN[domain] * math.exp(OUTPUT_SIGMA**2 / 2) / decode_tok_s


def p95_floor_s(trace: list[Request], rates: dict[str, float], quality_loss: float = 0.02) -> float:
    """A lower bound on the p95 of any policy within `quality_loss` of quality_only's quality on this trace.

    It is granted what no router has: no queueing anywhere and every answer's length known in advance. At a
    bound T, each request slower than T at its best specialist either is one of the 5 % allowed over T or moves
    to the best specialist that serves it within T, losing the difference in predicted quality; the cheapest
    moves are made first. The floor is the smallest T whose moves fit in the quality budget."""
    best = [max(r.quality, key=r.quality.get) for r in trace]
    times = [{n: service_s(r, rate) for n, rate in rates.items()} for r in trace]  # once, not per bound tried
    allowed_over = int(0.05 * len(trace))
    budget = quality_loss * sum(r.quality[b] for r, b in zip(trace, best))

    def fits(bound_s: float) -> bool:
        losses = sorted(
            min((r.quality[b] - r.quality[n] for n, t in at.items() if t <= bound_s), default=math.inf)
            for r, b, at in zip(trace, best, times)
            if at[b] > bound_s
        )
        return sum(losses[: max(0, len(losses) - allowed_over)]) <= budget

    bounds = sorted({t for at in times for t in at.values()})
    low, high = 0, len(bounds) - 1  # fits(bounds[-1]): nothing is slower than the slowest service time
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(bounds[middle]) else (middle + 1, high)
    return bounds[low]


def bursty_trace(profile: Profile, items: list[dict], args: argparse.Namespace) -> list[Request]:
    """Arrivals at `utilisation` of the cluster's capacity on average; bursting domains at `burst_factor` x in bursts.

    A domain's work is priced at the speed of the specialist that plays its role."""
    rng = random.Random(args.seed)
    speed = decode_rates(profile)
    role_speed = {d: next(speed[s.name] for s in profile.specialists if DOMAIN_ROLE[d] in s.roles) for d in SKEWED_MIX}
    by_domain: dict[str, list[dict]] = {}
    for item in items:
        by_domain.setdefault(item["domain"], []).append(item)
    domains = list(SKEWED_MIX)
    bursting_domains = domains if args.burst_domain == "all" else [args.burst_domain]
    boost = {d: (args.burst_factor if d in bursting_domains else 1.0) for d in domains}
    long_run_boost = {d: 1 + BURST_SHARE * (boost[d] - 1) for d in domains}
    work_per_request = sum(SKEWED_MIX[d] * long_run_boost[d] * mean_service_s(d, role_speed[d]) for d in domains)
    calm_rate = args.utilisation * args.replicas * SLOTS / work_per_request
    rates = {False: {d: calm_rate * SKEWED_MIX[d] for d in domains}, True: {d: calm_rate * SKEWED_MIX[d] * boost[d] for d in domains}}
    burst_mean_s = CALM_MEAN_S * BURST_SHARE / (1 - BURST_SHARE)
    t, bursting, state_ends, picked, times = 0.0, False, rng.expovariate(1 / CALM_MEAN_S), [], []
    while len(picked) < args.requests:
        total = sum(rates[bursting].values())
        gap = rng.expovariate(total)
        if t + gap >= state_ends:
            t, bursting = state_ends, not bursting
            state_ends = t + rng.expovariate(1 / (burst_mean_s if bursting else CALM_MEAN_S))
            continue
        t += gap
        domain = rng.choices(domains, [rates[bursting][d] for d in domains])[0]
        picked.append(rng.choice(by_domain[domain]))
        times.append(t)
    quality = predicted_quality(profile, [p["prompt"] for p in picked], default_cache_dir())
    return [
        Request(at, item["domain"], min(2000, len(item["prompt"]) // 4 + 1),
                max(1, round(rng.lognormvariate(math.log(OUTPUT_MEDIAN[item["domain"]]), OUTPUT_SIGMA))), q)
        for at, item, q in zip(times, picked, quality)
    ]


def replica_split(profile: Profile, trace: list[Request], replicas: int, provision: str) -> dict[str, int]:
    """Replicas per specialist: even, or in proportion to the work quality routing sends each (at least one each)."""
    names = profile.names
    if provision == "even":
        return {n: replicas // len(names) + (i < replicas % len(names)) for i, n in enumerate(names)}
    work, rates = dict.fromkeys(names, 0.0), decode_rates(profile)
    for request in trace:
        best = max(request.quality, key=request.quality.get)
        work[best] += service_s(request, rates[best])
    spare = replicas - len(names)
    ideal = {n: spare * work[n] / sum(work.values()) for n in names}
    split = {n: 1 + int(ideal[n]) for n in names}
    for n in sorted(names, key=lambda n: int(ideal[n]) - ideal[n])[: replicas - sum(split.values())]:
        split[n] += 1  # largest remainders
    return split


class Cluster:
    """Replicas, their queues, and what each specialist's router-side load looks like at any moment."""

    def __init__(self, profile: Profile, split: dict[str, int], rng: random.Random) -> None:
        names = profile.names
        self.profile, self.rng = profile, rng
        self.replicas = [Replica(name) for name in names for _ in range(split[name])]
        self.pools = {n: [r for r in self.replicas if r.specialist == n] for n in names}
        self.ewma: dict[str, float | None] = dict.fromkeys(names)
        expected_tokens = profile.router.expected_output_tokens
        self.unmeasured_s = {s.name: unmeasured_service_s(s, expected_tokens) for s in profile.specialists}
        self.arrivals_in_flight: dict[str, list[float]] = {n: [] for n in names}
        self.next_rr = 0

    def pow2(self, pool: list[Replica]) -> Replica:
        a, b = self.rng.sample(pool, 2) if len(pool) > 1 else (pool[0], pool[0])
        return a if a.pending <= b.pending else b

    def load(self, now: float) -> dict[str, Load]:
        return {name: self._load(name, pool, now) for name, pool in self.pools.items()}

    def _load(self, name: str, pool: list[Replica], now: float) -> Load:
        return Load(
            in_flight=sum(r.pending for r in pool), replicas=len(pool), slots_per_replica=SLOTS,
            ewma_latency_s=self.ewma[name], unmeasured_service_s=self.unmeasured_s[name],
            in_flight_age_s=mean_age_s(self.arrivals_in_flight[name], now),
        )

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
        return self.pow2(self.pools[rank(self.profile, request.quality, weights, self.load(request.at)).winner])

    def dispatched(self, replica: Replica, request: Request) -> None:
        self.arrivals_in_flight[replica.specialist].append(request.at)

    def finished(self, replica: Replica, request: Request, latency_s: float) -> None:
        self.arrivals_in_flight[replica.specialist].remove(request.at)
        previous = self.ewma[replica.specialist]
        self.ewma[replica.specialist] = latency_s if previous is None else (1 - EWMA_ALPHA) * previous + EWMA_ALPHA * latency_s


def simulate(profile: Profile, trace: list[Request], split: dict[str, int], policy: str, seed: int, slo_s: float) -> dict:
    """Run one policy over the trace; latency = queueing + service, per request."""
    cluster, rates = Cluster(profile, split, random.Random(seed)), decode_rates(profile)
    weights = Weights.from_request({"latency_budget_s": slo_s}, profile.router)  # callers with an SLO send it as their budget
    events: list[tuple[float, int, int, Replica, Request]] = []  # (time, kind 0=finish/1=arrival, seq, replica, request)
    for i, request in enumerate(trace):
        heapq.heappush(events, (request.at, 1, i, None, request))
    latencies, quality, served, seq = [], [], {n: 0 for n in profile.names}, len(trace)

    def start(replica: Replica, request: Request, now: float) -> None:
        nonlocal seq
        replica.running += 1
        seq += 1
        heapq.heappush(events, (now + service_s(request, rates[replica.specialist]), 0, seq, replica, request))

    while events:
        now, kind, _, replica, request = heapq.heappop(events)
        if kind == 1:
            replica = cluster.choose(policy, request, weights)
            cluster.dispatched(replica, request)
            served[replica.specialist] += 1
            quality.append(request.quality[replica.specialist])
            if replica.running < SLOTS:
                start(replica, request, now)
            else:
                replica.queue.append(request)
            continue
        replica.running -= 1
        latencies.append(now - request.at)
        cluster.finished(replica, request, now - request.at)
        if replica.queue:
            start(replica, replica.queue.popleft(), now)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {
        "p50_ms": round(float(p50) * 1000),
        "p95_ms": round(float(p95) * 1000),
        "p99_ms": round(float(p99) * 1000),
        "slo_attainment": round(sum(lat <= slo_s for lat in latencies) / len(latencies), 4),
        "mean_predicted_quality": round(sum(quality) / len(quality), 4),
        "routing_mix": {n: round(c / len(trace), 3) for n, c in served.items()},
    }


def run(args: argparse.Namespace) -> dict:
    from router.training import data

    profile = load_profile(args.profile)
    trace = bursty_trace(profile, data.load(), args)
    split = replica_split(profile, trace, args.replicas, args.provision)
    report = {policy: simulate(profile, trace, split, policy, args.seed, args.slo_s) for policy in POLICIES}
    ours, pow2, quality_only = report["quality_load"], report["pow2"], report["quality_only"]
    report["comparison"] = {
        "quality_load_p95_over_pow2_p95": round(ours["p95_ms"] / pow2["p95_ms"], 3),
        "quality_load_p95_over_quality_only_p95": round(ours["p95_ms"] / quality_only["p95_ms"], 3),
        "quality_load_quality_vs_quality_only": round(ours["mean_predicted_quality"] / quality_only["mean_predicted_quality"] - 1, 4),
    }
    floor_ms = round(p95_floor_s(trace, decode_rates(profile), args.floor_quality_loss) * 1000)
    report["p95_floor"] = {
        "quality_loss": args.floor_quality_loss, "p95_ms": floor_ms, "over_pow2_p95": round(floor_ms / pow2["p95_ms"], 3),
    }
    report["workload"] = {
        "profile": args.profile, "replicas": args.replicas, "replica_split": split, "provision": args.provision,
        "requests": len(trace), "seed": args.seed, "mix": SKEWED_MIX, "utilisation": args.utilisation,
        "burst_domain": args.burst_domain, "burst_factor": args.burst_factor, "burst_share": BURST_SHARE,
        "calm_mean_s": CALM_MEAN_S, "slo_s": args.slo_s, "slots_per_replica": SLOTS,
        "decode_tok_s_per_sequence": decode_rates(profile), "prefill_tok_s": PREFILL_TOK_S, "output_median_tokens": OUTPUT_MEDIAN,
        "duration_s": round(trace[-1].at, 1),
    }
    if getattr(args, "ensemble", None):  # callers that predate the flag build their own Namespace without it
        from cluster.simulate import ensemble

        report["ensembles"] = ensemble.price(profile, trace, args)
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
    from cluster.simulate import ensemble

    parser = argparse.ArgumentParser(prog="python -m cluster.simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--utilisation", type=float, default=0.65, help="long-run offered load / cluster capacity")
    parser.add_argument("--burst-factor", type=float, default=4.0, help="a bursting domain's rate in bursts / its calm rate")
    parser.add_argument("--burst-domain", default="biomedical", choices=[*SKEWED_MIX, "all"], help="the domain that surges")
    parser.add_argument("--provision", default="demand", choices=["demand", "even"],
                        help="replicas per specialist: in proportion to quality routing's long-run work, or even")
    parser.add_argument("--slo-s", type=float, default=30.0, help="a request meets the SLO if it finishes within this")
    parser.add_argument("--floor-quality-loss", type=float, default=0.02,
                        help="the quality (share of quality_only's) the p95 floor may give up; the issue's goal allows 0.02")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    parser.add_argument("--plot", type=Path, help="write a PNG of latency percentiles and quality per policy")
    parser.add_argument("--ensemble", type=ensemble.parse_modes, metavar="MODE[,MODE...]|all",
                        help="also price these ensemble modes, with single and moa as references, under the report's `ensembles`")
    parser.add_argument("--early-stop-rate", type=float, default=0.5, help="share of routemoa requests that stop after proposing")
    parser.add_argument("--ensemble-requests", type=int, help="price ensembles on the trace's first N requests (default: all)")
    args = parser.parse_args(argv)
    if not 0 <= args.early_stop_rate <= 1:
        parser.error("--early-stop-rate must be within 0 and 1")
    if args.ensemble_requests is not None and args.ensemble_requests < 1:
        parser.error("--ensemble-requests must be at least 1")
    profile = load_profile(args.profile)
    if args.replicas < len(profile.names):
        parser.error("need at least one replica per specialist")
    try:
        decode_rates(profile)
    except CatalogError as e:
        parser.error(str(e))
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
    floor = report["p95_floor"]
    print(f"no policy within {floor['quality_loss']:.0%} of quality_only's quality can have a p95 below "
          f"{floor['p95_ms'] / 1000:.1f} s "
          f"({floor['over_pow2_p95']}x pow2's), even with no queueing and answer lengths known in advance")
    if args.ensemble:
        print(f"ensembles, {report['ensembles']['settings']['requests_note']}:")
        print(ensemble.table(report["ensembles"]))


if __name__ == "__main__":
    main()
