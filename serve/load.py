"""The live load snapshot per specialist that the `auto` policy trades against predicted quality.

Router-side signals are exact and instant: requests this router replica has in flight and their mean age, EWMA
latency and time to first token. Ray Serve's signals (healthy replicas, requests at the replicas from every router
replica, requests queued in handles) come from ServeMetricsPoller, fresh within ~1 s. Anything missing or stale falls
back to a documented default, named in `Load.defaults` and so in the decision trace:
- replicas: the deployment's min_replicas (what Serve keeps running at least), also while Serve reports no
  healthy replica (right after start-up the health series appears after the others);
- Serve's ongoing/queued: this router's own in-flight count stands alone;
- latency: until a request to the specialist has finished, the expected answer (the profile's
  `router.expected_output_tokens`, or the request's smaller max_tokens) at its catalog `decode_tok_s`
  (router.policy.DEFAULT_SERVICE_S without one); an estimate with no new sample for LATENCY_FRESH_S (nothing sent
  there, nothing in flight) halves every LATENCY_HALF_LIFE_S towards that prior, so a specialist shunned after one
  slow spell is tried, and re-measured, again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from router.catalog import Profile, Specialist
from router.policy import mean_age_s, unmeasured_service_s
from router.routing import Load
from serve.cluster_metrics import ServeMetricsPoller

EWMA_ALPHA = 0.2
LATENCY_FRESH_S = 30.0
LATENCY_HALF_LIFE_S = 30.0
DOWN_FOR_S = 15.0  # after a specialist fails, `auto` tries it last for this long (Serve restarts it meanwhile)


def _ewma(previous: float | None, sample: float) -> float:
    return sample if previous is None else (1 - EWMA_ALPHA) * previous + EWMA_ALPHA * sample


def slots_per_replica(spec: Specialist) -> int:
    """Requests one replica runs at once: Serve's admission limit, or the engine's batch if that is smaller."""
    max_num_seqs = spec.engine.model_dump().get("max_num_seqs")
    return min(spec.deployment.max_ongoing_requests, max_num_seqs or spec.deployment.max_ongoing_requests)


@dataclass
class _Counters:
    started: list[float] = field(default_factory=list)  # monotonic start of each request in flight
    ewma_latency_s: float | None = None
    ewma_ttft_s: float | None = None
    sampled_at: float = float("-inf")
    failed_at: float = float("-inf")


class LoadTracker:
    """Counts what this ingress replica sends to each specialist and merges in Serve's view of the cluster."""

    def __init__(self, profile: Profile, serve_metrics: ServeMetricsPoller | None = None) -> None:
        self.profile = profile
        self.serve_metrics = serve_metrics
        self._counters = {name: _Counters() for name in profile.names}

    @contextmanager
    def track(self, name: str) -> Iterator[None]:
        counters = self._counters[name]
        start = time.monotonic()
        counters.started.append(start)
        try:
            yield
        finally:
            counters.started.remove(start)
            counters.ewma_latency_s = _ewma(counters.ewma_latency_s, time.monotonic() - start)
            counters.sampled_at = time.monotonic()

    def first_token(self, name: str, seconds: float) -> None:
        """Time from dispatch to the specialist's first packet (the whole answer when not streaming)."""
        counters = self._counters[name]
        counters.ewma_ttft_s = _ewma(counters.ewma_ttft_s, seconds)

    def in_flight(self) -> dict[str, int]:
        return {name: len(counters.started) for name, counters in self._counters.items()}

    def mark_failed(self, name: str) -> None:
        self._counters[name].failed_at = time.monotonic()

    def is_down(self, name: str) -> bool:
        """Failed within the last DOWN_FOR_S seconds: a circuit breaker, so `auto` does not wait on a dead engine."""
        return time.monotonic() - self._counters[name].failed_at < DOWN_FOR_S

    def snapshot(self, max_tokens: int | None = None) -> dict[str, Load]:
        """Every specialist's load, latencies priced for a request that may generate up to `max_tokens`."""
        expected = self.profile.router.expected_output_tokens
        output_tokens = min(max_tokens, expected) if max_tokens else expected
        return {spec.name: self._load(spec, output_tokens) for spec in self.profile.specialists}

    @staticmethod
    def _latency_estimate(counters: _Counters, prior_s: float, prior_basis: str, defaults: list[str]) -> float | None:
        """The EWMA latency, aged towards the prior while it is stale; how it was made is added to `defaults`."""
        if counters.ewma_latency_s is None:
            defaults.append(f"latency: no finished request yet, {prior_s:.3g} s assumed ({prior_basis})")
            return None
        idle_s = time.monotonic() - counters.sampled_at
        if counters.started or idle_s <= LATENCY_FRESH_S:
            return counters.ewma_latency_s
        decay = 0.5 ** ((idle_s - LATENCY_FRESH_S) / LATENCY_HALF_LIFE_S)
        aged = prior_s + (counters.ewma_latency_s - prior_s) * decay
        defaults.append(f"latency: last sample {idle_s:.0f} s ago, {counters.ewma_latency_s:.3g} s aged to {aged:.3g} s")
        return aged

    def _load(self, spec: Specialist, output_tokens: int) -> Load:
        counters = self._counters[spec.name]
        defaults: list[str] = []
        prior_s = unmeasured_service_s(spec, output_tokens)
        basis = f"{output_tokens} tokens at decode_tok_s {spec.decode_tok_s:g}" if spec.decode_tok_s else "no catalog decode_tok_s"
        latency_s = self._latency_estimate(counters, prior_s, basis, defaults)
        sample = self.serve_metrics.fresh(spec.name) if self.serve_metrics else None
        if sample is None:
            why = "no metrics_url" if self.serve_metrics is None else "serve metrics missing or stale"
            defaults.append(f"serve: {why}; min_replicas and this router's in-flight count used")
        if sample and not sample.replicas:
            defaults.append("replicas: Serve reports none healthy (starting, or its health series not exported yet); min_replicas used")
        return Load(
            in_flight=len(counters.started),
            serve_ongoing=sample.ongoing if sample else None,
            serve_queued=sample.queued if sample else None,
            replicas=max(1, (sample and sample.replicas) or spec.deployment.autoscaling.min_replicas),
            slots_per_replica=slots_per_replica(spec),
            ewma_latency_s=latency_s,
            unmeasured_service_s=prior_s,
            ewma_ttft_s=counters.ewma_ttft_s,
            in_flight_age_s=mean_age_s(counters.started, time.monotonic()),
            defaults=tuple(defaults),
        )
