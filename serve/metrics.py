"""The router's Prometheus metrics, all in one class (ray.serve.metrics: a prometheus_client registry inside a replica
is not scraped). Ray prefixes every name with `ray_` and adds deployment/replica/application tags.

Counters and gauges are summed in a dict per request and handed to Ray once a second (`flush`, by the ingress): each
Ray metric call has a cost, and the request path pays for every one (docs/benchmarks/metrics_overhead.md). Gauges are
re-set on every flush because Ray exports a gauge only while it is being set. Histograms go to Ray at once (Ray has
no call that adds many observations).

Labels take only bounded values: specialist names from the catalog (or "none"), the outcome, reason and cause enums of
serve/observe.py, ensemble modes and stage names. Request ids belong in the decision log, never in a label.
"""

from __future__ import annotations

from collections import Counter

from ray.serve import metrics

from router.catalog import Profile
from serve.observe import Record

NONE = "none"  # the specialist label of a request refused before one was chosen
LATENCY_S = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300]
TTFT_S = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60]
ITL_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2]
DECISION_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
UNIT = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


class RouterMetrics:
    """Every instrument of the ingress, and `record(record)`: one finished request becomes its observations."""

    def __init__(self, profile: Profile, version: str, checkpoint: str) -> None:
        self.names = set(profile.names)
        self.requests = metrics.Counter("router_requests_total", "requests by the specialist that answered (or last failed), "
                                        "outcome, stream",
                                        ("specialist", "outcome", "stream"))
        self.decisions = metrics.Counter("router_decisions_total", "routing decisions by first choice and reason",
                                         ("specialist", "reason"))
        self.fallbacks = metrics.Counter("router_fallbacks_total", "a candidate failed and the next one was tried",
                                         ("from_specialist", "to_specialist", "cause"))
        self.margin = metrics.Histogram("router_scorer_margin", "predicted quality, top-1 minus top-2", UNIT)
        self.decision_s = metrics.Histogram("router_decision_seconds", "scoring and ranking time (router overhead)", DECISION_S)
        self.latency_s = metrics.Histogram("router_request_seconds", "end-to-end latency as the client sees it", LATENCY_S,
                                           ("specialist", "stream"))
        self.ttft_s = metrics.Histogram("router_ttft_seconds", "time to the first token of a stream", TTFT_S, ("specialist",))
        self.itl_s = metrics.Histogram("router_itl_seconds", "a stream's mean time between tokens", ITL_S, ("specialist",))
        self.prompt_tokens = metrics.Counter("router_prompt_tokens_total", "prompt tokens, every call", ("specialist",))
        self.generation_tokens = metrics.Counter("router_generation_tokens_total", "generated tokens, every call",
                                                 ("specialist",))
        self.inflight = metrics.Gauge("router_inflight", "requests this ingress replica has at the specialist", ("specialist",))
        self.expected_s = metrics.Gauge("router_expected_latency_seconds", "the latency the router expected at its last decision",
                                        ("specialist",))
        self.stages = metrics.Counter("router_ensemble_stages_total", "ensemble stages run", ("mode", "stage"))
        self.early_stops = metrics.Counter("router_ensemble_early_stops_total", "ensembles answered at an early stop", ("mode",))
        self.cache = metrics.Counter("router_cache_lookups_total", "response-cache lookups", ("result",))
        self.judge = metrics.Histogram("router_judge_score", "the online judge's P(correct) of a sampled answer", UNIT,
                                       ("specialist",))
        self.store_failures = metrics.Counter("router_quota_store_failures_total", "quota-store (Redis) calls that failed: "
                                              "requests served without quotas (redis_down: open) or refused (closed)")
        self._store_failures_seen = 0
        build = metrics.Gauge("router_build_info", "1, labelled with what is serving", ("version", "checkpoint"))
        self._counts: Counter[tuple[metrics.Counter, tuple[tuple[str, str], ...]]] = Counter()
        self._gauges = {(build, (("version", version), ("checkpoint", checkpoint))): 1.0}

    def flush(self) -> None:
        counts, self._counts = self._counts, Counter()
        for (counter, tags), value in counts.items():
            counter.inc(value, dict(tags))
        for (gauge, tags), value in self._gauges.items():
            gauge.set(value, dict(tags))

    def _count(self, counter: metrics.Counter, value: float = 1, **tags: str) -> None:
        if value > 0:  # Ray's counters refuse 0, so a series appears with its first event
            self._counts[(counter, tuple(tags.items()))] += value

    def _set(self, gauge: metrics.Gauge, value: float, **tags: str) -> None:
        self._gauges[(gauge, tuple(tags.items()))] = value

    def label(self, name: str | None) -> str:
        return name if name in self.names else NONE

    def record(self, r: Record) -> None:
        specialist, stream = self.label(r.specialist), "true" if r.stream else "false"
        self._count(self.requests, specialist=specialist, outcome=r.outcome, stream=stream)
        self.latency_s.observe(r.seconds, {"specialist": specialist, "stream": stream})
        if r.reason is not None:
            self._count(self.decisions, specialist=self.label(r.first_choice), reason=r.reason)
        for failed, to, cause in r.fallbacks:
            self._count(self.fallbacks, from_specialist=self.label(failed), to_specialist=self.label(to), cause=cause)
        if r.margin is not None:
            self.margin.observe(r.margin)
        if r.decision_s is not None:
            self.decision_s.observe(r.decision_s)
        if r.ttft_s is not None:
            self.ttft_s.observe(r.ttft_s, {"specialist": specialist})
        if r.itl_s is not None:
            self.itl_s.observe(r.itl_s, {"specialist": specialist})
        for name, (prompt, completion) in r.tokens.items():
            self._count(self.prompt_tokens, prompt, specialist=self.label(name))
            self._count(self.generation_tokens, completion, specialist=self.label(name))
        for name, expected_s in r.expected_latency_s.items():
            self._set(self.expected_s, expected_s, specialist=self.label(name))
        if r.ensemble_mode is not None:
            for stage in r.ensemble_stages:
                self._count(self.stages, mode=r.ensemble_mode, stage=stage)
            if r.early_stop:
                self._count(self.early_stops, mode=r.ensemble_mode)
        if r.cache_hit is not None:
            self._count(self.cache, result="hit" if r.cache_hit else "miss")

    def set_inflight(self, counts: dict[str, int]) -> None:
        for name, count in counts.items():
            self._set(self.inflight, count, specialist=self.label(name))

    def quota_store_failed(self, total: int) -> None:
        """Count the quota store's failures since the last flush (`total`: since start)."""
        self._count(self.store_failures, total - self._store_failures_seen)
        self._store_failures_seen = total

    def judged(self, specialist: str, score: float) -> None:
        self.judge.observe(score, {"specialist": self.label(specialist)})
