"""Routed ensembles priced at scale: every request of the simulator's trace becomes one mode's calls.

    python -m cluster.simulate --profile gpu --replicas 64 --seed 0 --ensemble all --json

Each mode turns a request into stages of calls (router/ensemble/modes.py): a stage's calls run at once, each on the
replica pow2 picks in its specialist's pool when the stage starts, and the next stage starts when the last call of
this one finished. The specialists are ranked by predicted quality alone, so the baseline `single` is the
`quality_only` policy: the ratios then count what the ensemble adds, not a different routing.

Lengths: a non-final call's answer is drawn from the per-domain output distribution and capped at the profile's
`proposer_max_tokens`; the final call (aggregator, revision, single) writes the request's own uncapped answer. A
judge call is its prompt's prefill and one token. An aggregator, a judge or a later MoA layer reads each answer cut
to REFERENCE_TOKENS, as the router cuts it; the instruction wording is not counted.

Every mode runs on a cluster sized for its work at the trace's utilisation (where an autoscaler would settle):
replicas scaled by its work over `single`'s, split so that no pool has more work per replica than it must. The
latencies are then comparable, and the replica count is the price in GPUs.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from cluster.simulate.simulator import (
    OUTPUT_MEDIAN, OUTPUT_SIGMA, SLOTS, Cluster, Replica, Request, decode_rates, replica_split, service_s,
)
from router.catalog import ENSEMBLE_MODES, Profile
from router.ensemble.modes import near_best
from router.ensemble.prompts import REFERENCE_CHARS

BASELINE = "single"
REFERENCES = (BASELINE, "moa")  # always priced: the ratios' denominators
REFERENCE_TOKENS = REFERENCE_CHARS // 4  # the simulator's 4 characters a token
ROUTEMOA_MOST = 3  # proposers RouteMoA screens down to


class Call(NamedTuple):
    specialist: str
    prompt_tokens: int
    output_tokens: int


Stages = list[list[Call]]  # in order: the calls of one stage run at once; a stage starts when the previous one ended


def parse_modes(text: str) -> list[str]:
    """`--ensemble`: comma-separated modes or `all`; an unknown mode is a usage error naming the valid ones."""
    modes = list(ENSEMBLE_MODES) if text == "all" else [mode.strip() for mode in text.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in ENSEMBLE_MODES] or ([] if modes else [text])
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown ensemble mode(s) {unknown}; choose from {', '.join(ENSEMBLE_MODES)} or all")
    return modes


def references(answers: Sequence[Call]) -> int:
    """Prompt tokens the answers add to a later call that reads them all."""
    return sum(min(answer.output_tokens, REFERENCE_TOKENS) for answer in answers)


class Planner:
    """Turns a request into a mode's stages, with the profile's ensemble defaults as the router resolves them
    (router/ensemble/spec.py); proposal lengths and early stops come from its own seeded rng."""

    def __init__(self, profile: Profile, early_stop_rate: float, seed: int) -> None:
        config = profile.ensemble
        self.names, self.k, self.layers = profile.names, config.proposers, config.layers
        self.cap, self.score_gap, self.fixed_aggregator = config.proposer_max_tokens, config.score_gap, config.aggregator
        self.early_stop_rate, self.rng = early_stop_rate, random.Random(seed)

    def stages(self, mode: str, request: Request) -> Stages:
        return getattr(self, mode)(request)

    def ranked(self, request: Request) -> list[str]:
        return sorted(self.names, key=lambda name: -request.quality[name])

    def aggregator(self, request: Request) -> str:
        return self.fixed_aggregator or self.ranked(request)[0]

    def draw(self, domain: str) -> int:
        """A non-final answer's length: the simulator's per-domain lognormal, cut at the proposers' max_tokens."""
        return min(self.cap, max(1, round(self.rng.lognormvariate(math.log(OUTPUT_MEDIAN[domain]), OUTPUT_SIGMA))))

    def propose(self, request: Request, names: list[str], seen: Sequence[Call] = ()) -> list[Call]:
        return [Call(name, request.prompt_tokens + references(seen), self.draw(request.domain)) for name in names]

    def final(self, request: Request, name: str, answers: list[Call]) -> Call:
        return Call(name, request.prompt_tokens + references(answers), request.output_tokens)

    def verdict(self, request: Request, judge: str, answer: Call) -> Call:
        return Call(judge, request.prompt_tokens + references([answer]), 1)

    def single(self, request: Request) -> Stages:
        return [[self.final(request, self.ranked(request)[0], [])]]

    def routemoa(self, request: Request) -> Stages:
        """Screened proposers; an early stop, or a lone proposer, ends there; else every proposer judges every peer,
        then the aggregator."""
        kept = near_best(self.ranked(request), request.quality, self.score_gap, min(self.k, ROUTEMOA_MOST))
        answers = self.propose(request, kept)
        if len(kept) == 1 or self.rng.random() < self.early_stop_rate:
            return [answers]
        verdicts = [self.verdict(request, judge, answer) for judge in kept for answer in answers if answer.specialist != judge]
        return [stage for stage in (answers, verdicts, [self.final(request, self.aggregator(request), answers)]) if stage]

    def moa(self, request: Request) -> Stages:
        """Every specialist proposes in every layer, from the second on reading the previous layer's answers."""
        layers = [self.propose(request, self.names)]
        for _ in range(self.layers - 1):
            layers.append(self.propose(request, self.names, layers[-1]))
        return [*layers, [self.final(request, self.aggregator(request), layers[-1])]]

    def self_moa(self, request: Request) -> Stages:
        top = self.ranked(request)[0]
        samples = self.propose(request, [top] * self.k)
        return [samples, [self.final(request, top, samples)]]

    def top_n(self, request: Request) -> list[str]:
        """The top-k specialists; past the last one, the ranking again (as the router's seeded samples)."""
        ranked = self.ranked(request)
        return [ranked[i % len(ranked)] for i in range(self.k)]

    def vote(self, request: Request) -> Stages:
        return [self.propose(request, self.top_n(request))]

    def best_of_n(self, request: Request) -> Stages:
        """The aggregator specialist judges each proposal; the best one goes back unchanged."""
        answers = self.propose(request, self.top_n(request))
        return [answers, [self.verdict(request, self.aggregator(request), answer) for answer in answers]]

    def refine(self, request: Request) -> Stages:
        """The top specialist drafts, the aggregator specialist critiques, the top one revises reading both."""
        top = self.ranked(request)[0]
        [draft] = self.propose(request, [top])
        [critique] = self.propose(request, [self.aggregator(request)], [draft])
        revision = Call(top, request.prompt_tokens + draft.output_tokens + references([critique]), request.output_tokens)
        return [[draft], [critique], [revision]]


def work_by_specialist(profile: Profile, plans: list[Stages]) -> dict[str, float]:
    """Slot-seconds of service each specialist's replicas owe the plans."""
    rates, work = decode_rates(profile), dict.fromkeys(profile.names, 0.0)
    for stages in plans:
        for stage in stages:
            for call in stage:
                work[call.specialist] += service_s(call, rates[call.specialist])
    return work


def split_by_work(work: dict[str, float], replicas: int) -> dict[str, int]:
    """One replica each, then each next one to the pool with the most work per replica: the busiest pool sets the tail."""
    split = dict.fromkeys(work, 1)
    for _ in range(replicas - len(work)):
        split[max(work, key=lambda name: work[name] / split[name])] += 1
    return split


def simulate_stages(
    profile: Profile, trace: list[Request], plans: list[Stages], split: dict[str, int], seed: int,
) -> list[list[list]]:
    """Run every request's stages; per request, each call's [stage, specialist, dispatched, started, finished] (s)."""
    cluster, rates = Cluster(profile, split, random.Random(seed)), decode_rates(profile)
    records: list[list[list]] = [[] for _ in trace]
    stage_of, open_calls = [0] * len(trace), [0] * len(trace)
    events: list[tuple] = [(request.at, 1, i, i) for i, request in enumerate(trace)]  # (time, 0=finish/1=arrival, seq, what)
    heapq.heapify(events)
    seq = len(trace)

    def start(replica: Replica, i: int, call: Call, record: list, now: float) -> None:
        nonlocal seq
        replica.running += 1
        record[3] = now
        seq += 1
        heapq.heappush(events, (now + service_s(call, rates[call.specialist]), 0, seq, (replica, i, record)))

    def dispatch(i: int, now: float) -> None:
        stage = plans[i][stage_of[i]]
        open_calls[i] = len(stage)
        for call in stage:
            replica, record = cluster.pow2(cluster.pools[call.specialist]), [stage_of[i], call.specialist, now, None, None]
            records[i].append(record)
            if replica.running < SLOTS:
                start(replica, i, call, record, now)
            else:
                replica.queue.append((i, call, record))

    while events:
        now, kind, _, what = heapq.heappop(events)
        if kind == 1:
            dispatch(what, now)
            continue
        replica, i, record = what
        record[4] = now
        replica.running -= 1
        if replica.queue:
            start(replica, *replica.queue.popleft(), now)
        open_calls[i] -= 1
        if open_calls[i] == 0 and stage_of[i] + 1 < len(plans[i]):
            stage_of[i] += 1
            dispatch(i, now)
    return records


def unloaded_s(profile: Profile, stages: Stages) -> float:
    """A request's latency with no queueing anywhere: each stage waits for its slowest call. What the mode itself costs
    in time, apart from what the load adds."""
    rates = decode_rates(profile)
    return sum(max(service_s(call, rates[call.specialist]) for call in stage) for stage in stages)


def percentiles_ms(latencies_s: list[float], name: str = "") -> dict:
    p50, p95 = np.percentile(latencies_s, [50, 95])
    return {f"p50{name}_ms": round(float(p50) * 1000), f"p95{name}_ms": round(float(p95) * 1000)}


def summarise(
    profile: Profile, trace: list[Request], plans: list[Stages], records: list[list[list]], work: dict[str, float],
    split: dict[str, int],
) -> dict:
    calls = [call for stages in plans for stage in stages for call in stage]
    n = len(trace)
    prompt, completion = sum(c.prompt_tokens for c in calls) / n, sum(c.output_tokens for c in calls) / n
    latencies = [max(record[4] for record in calls_of) - request.at for request, calls_of in zip(trace, records)]
    return {
        "calls_per_request": round(len(calls) / n, 3), "prompt_tokens_per_request": round(prompt, 1),
        "completion_tokens_per_request": round(completion, 1), "tokens_per_request": round(prompt + completion, 1),
        "gpu_s_per_request": round(sum(work.values()) / SLOTS / n, 3), **percentiles_ms(latencies),
        **percentiles_ms([unloaded_s(profile, stages) for stages in plans], "_unloaded"),
        "replicas": sum(split.values()), "replica_split": split,
    }


RATIO_KEYS = ("calls_per_request", "tokens_per_request", "gpu_s_per_request", "p50_ms", "p95_ms", "p95_unloaded_ms")


def ratios(row: dict, to: dict) -> dict:
    return {key: round(row[key] / to[key], 3) for key in RATIO_KEYS}


def price_mode(profile: Profile, trace: list[Request], mode: str, baseline_work: float, args: argparse.Namespace) -> dict:
    """One mode's plans, on `--replicas` scaled by its work over `baseline_work` and split by `--provision`, simulated."""
    planner = Planner(profile, args.early_stop_rate, args.seed)
    plans = [planner.stages(mode, request) for request in trace]
    work = work_by_specialist(profile, plans)
    size = max(len(profile.names), round(args.replicas * sum(work.values()) / baseline_work))
    split = replica_split(profile, trace, size, "even") if args.provision == "even" else split_by_work(work, size)
    return summarise(profile, trace, plans, simulate_stages(profile, trace, plans, split, args.seed), work, split)


def price(profile: Profile, trace: list[Request], args: argparse.Namespace) -> dict:
    """`single`, `moa` and the asked modes on the first `--ensemble-requests` requests of the trace, with ratios."""
    used = trace[: args.ensemble_requests]
    single = Planner(profile, args.early_stop_rate, args.seed)
    baseline_work = sum(work_by_specialist(profile, [single.single(request) for request in used]).values())
    modes = {mode: price_mode(profile, used, mode, baseline_work, args) for mode in dict.fromkeys([*REFERENCES, *args.ensemble])}
    for row in modes.values():
        row["over_single"], row["over_moa"] = ratios(row, modes[BASELINE]), ratios(row, modes["moa"])
    config = profile.ensemble
    return {
        "settings": {
            "baseline": f"{BASELINE} = quality_only: the best predicted specialist, pow2 among its replicas",
            "requests": len(used), "trace_requests": len(trace),
            "requests_note": f"the first {len(used)} of the trace's {len(trace)} requests" if len(used) < len(trace)
            else f"all {len(trace)} requests of the trace",
            "early_stop_rate": args.early_stop_rate, "proposers": config.proposers,
            "routemoa_proposers": min(config.proposers, ROUTEMOA_MOST), "moa_proposers": len(profile.names),
            "layers": config.layers, "proposer_max_tokens": config.proposer_max_tokens, "score_gap": config.score_gap,
            "aggregator": config.aggregator or "the best predicted specialist per prompt", "reference_tokens": REFERENCE_TOKENS,
            "gpu_s": "sum over calls of service time / slots per replica (a replica's share at a full batch)",
            "replicas": "per mode, scaled by its work over single's at the trace's utilisation, split by --provision",
        },
        "modes": modes,
    }


COLUMNS = (  # the table's: header, and the value from a mode's row
    ("calls / req", lambda r: f"{r['calls_per_request']:.2f}"),
    ("tokens / req", lambda r: f"{r['tokens_per_request']:,.0f}"),
    ("GPU-s / req", lambda r: f"{r['gpu_s_per_request']:.2f}"),
    ("p50 s", lambda r: f"{r['p50_ms'] / 1000:.1f}"),
    ("p95 s", lambda r: f"{r['p95_ms'] / 1000:.1f}"),
    ("p95 unloaded s", lambda r: f"{r['p95_unloaded_ms'] / 1000:.1f}"),
    ("replicas", lambda r: str(r["replicas"])),
    ("tokens × single", lambda r: f"{r['over_single']['tokens_per_request']:.2f}"),
    ("tokens × moa", lambda r: f"{r['over_moa']['tokens_per_request']:.2f}"),
    ("GPU-s × single", lambda r: f"{r['over_single']['gpu_s_per_request']:.2f}"),
    ("GPU-s × moa", lambda r: f"{r['over_moa']['gpu_s_per_request']:.2f}"),
    ("p95 × single", lambda r: f"{r['over_single']['p95_ms']:.2f}"),
)


def table(ensembles: dict) -> str:
    """The report as a markdown table, one row per mode."""
    lines = ["| mode | " + " | ".join(header for header, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for mode, row in ensembles["modes"].items():
        lines.append(f"| `{mode}` | " + " | ".join(value(row) for _, value in COLUMNS) + " |")
    return "\n".join(lines)
